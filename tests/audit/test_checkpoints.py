"""Keys, signed notes, the checkpoint format, and the checkpoint thread of AuditLog."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import threading
from datetime import UTC, datetime

import pytest

from streamwarden import Settings
from streamwarden.audit.chain import GENESIS_HASH
from streamwarden.audit.checkpointer import THREAD_NAME
from streamwarden.audit.checkpoints import Checkpoint, checkpoint_files, read_checkpoint
from streamwarden.audit.log import AuditLog
from streamwarden.audit.notes import (
    Signer,
    Verifier,
    load_signer,
    load_verifier,
    open_note,
    sign_note,
    write_key_pair,
)
from streamwarden.errors import CheckpointError, InvalidInputError
from tests.audit.anchored import append
from tests.audit.histories import open_log, synthetic_records
from tests.waiting import wait_until


def test_key_pair_files_modes_and_refusal_to_overwrite(tmp_path):
    key = tmp_path / "audit.key"
    private, public, verifier = write_key_pair(key, "test.example/audit")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert public == tmp_path / "audit.key.pub" and load_verifier(public) == verifier
    assert load_signer(private).verifier == verifier
    with pytest.raises(InvalidInputError, match="refusing to overwrite"):
        write_key_pair(key, "test.example/audit")
    assert load_signer(private).verifier == verifier  # untouched


def test_key_id_follows_the_signed_note_spec():
    signer = Signer.generate("example.com/log")
    public = signer.verifier.public_key
    expected = hashlib.sha256(b"example.com/log\n\x01" + public).digest()[:4]
    assert signer.verifier.key_id == expected
    name, hex_id, body = signer.verifier.encode().split("+", 2)
    assert (name, hex_id, base64.b64decode(body)) == ("example.com/log", expected.hex(),
                                                       b"\x01" + public)


def test_no_key_bytes_in_repr_or_errors(tmp_path):
    signer = Signer.generate("test.example/audit")
    secret = signer.encode().split("+", 4)[4]  # base64 may itself hold a "+"
    assert secret not in repr(signer) and "test.example/audit" in repr(signer)
    broken = tmp_path / "broken.key"
    broken.write_text(signer.encode()[:-6] + "\n")
    with pytest.raises(InvalidInputError) as raised:
        load_signer(broken)
    assert secret[:20] not in str(raised.value) and str(broken) in str(raised.value)


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\tname"])
def test_bad_key_names_are_refused(name):
    with pytest.raises(InvalidInputError):
        Signer.generate(name)


def test_a_note_verifies_only_with_the_right_key_and_text():
    signer, other = Signer.generate("a.example/k"), Signer.generate("a.example/k")
    note = sign_note(b"line one\nline two\n", [signer])
    assert open_note(note, [signer.verifier]).signed_by == ("a.example/k",)
    with pytest.raises(CheckpointError) as raised:
        open_note(note.replace(b"one", b"0ne"), [signer.verifier])
    assert raised.value.reason == "bad_signature"
    with pytest.raises(CheckpointError) as raised:
        open_note(note, [other.verifier])
    assert raised.value.reason == "unknown_key"


def test_a_cosigned_note_verifies_with_either_key():
    old, new = Signer.generate("a.example/old"), Signer.generate("a.example/new")
    note = sign_note(b"text\n", [old, new])
    assert open_note(note, [new.verifier]).signed_by == ("a.example/new",)
    assert open_note(note, [old.verifier, new.verifier]).signed_by == ("a.example/old",
                                                                       "a.example/new")


@pytest.mark.parametrize("note", [b"no signature block\n", b"text\n\n", b"text\n\nnot a line\n",
                                  b"te\x01xt\n\n\xe2\x80\x94 k AAAAAAA=\n", b"x" * 70000])
def test_malformed_notes_are_refused(note):
    with pytest.raises(CheckpointError) as raised:
        open_note(note, [Signer.generate("k").verifier])
    assert raised.value.reason == "malformed_checkpoint"


def test_checkpoint_text_round_trips_and_only_one_encoding_is_accepted():
    checkpoint = Checkpoint("o.example/a", 12, "ab" * 32,
                            datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), GENESIS_HASH)
    text = checkpoint.text()
    assert text.splitlines()[:2] == [b"o.example/a", b"12"]
    assert Checkpoint.parse(text) == checkpoint
    for variant in (text.replace(b"\n12\n", b"\n012\n"), text + b"extra\n",
                    text.replace(b"Z\n", b"+00:00\n")):
        with pytest.raises(CheckpointError):
            Checkpoint.parse(variant)


def test_a_log_writes_checkpoints_every_n_records_and_on_close(db_url, tmp_path):
    key = tmp_path / "k"
    write_key_pair(key, "test.example/audit")
    directory = tmp_path / "ck"
    settings = Settings(checkpoint_every=10, checkpoint_interval=3600)
    with open_log(db_url) as log:
        pass  # migrated
    log = AuditLog.open(db_url, settings=settings, checkpoint_dir=directory,
                        checkpoint_key=key)
    append(log, list(synthetic_records(25)))
    assert wait_until(lambda: directory.is_dir() and len(checkpoint_files(directory)) >= 2)
    log.close()
    assert not any(thread.name == THREAD_NAME for thread in threading.enumerate())
    public = load_verifier(f"{key}.pub")
    sizes = [read_checkpoint(path.read_bytes(), [public]).checkpoint.size
             for path in checkpoint_files(directory)]
    assert sizes[-1] == 25 and sizes == sorted(sizes) and sizes[0] >= 10
    with AuditLog.open(db_url) as reader:
        assert reader.verify_checkpoints(directory, [public]).ok


def test_a_heartbeat_is_written_when_nothing_happens(sqlite_url, tmp_path):
    key = tmp_path / "k"
    write_key_pair(key, "test.example/audit")
    directory = tmp_path / "ck"
    with AuditLog.open(sqlite_url) as log:  # the rows exist before the first heartbeat
        append(log, list(synthetic_records(3)))
    settings = Settings(checkpoint_every=1000, checkpoint_interval=0.2)
    with AuditLog.open(sqlite_url, settings=settings, checkpoint_dir=directory,
                       checkpoint_key=key):
        assert wait_until(lambda: directory.is_dir()
                          and len(checkpoint_files(directory)) >= 3, timeout=10)
    public = load_verifier(f"{key}.pub")
    checkpoints = [read_checkpoint(p.read_bytes(), [public]).checkpoint
                   for p in checkpoint_files(directory)]
    assert {c.size for c in checkpoints} == {3}  # heartbeats: same size, later times
    assert [c.time for c in checkpoints] == sorted({c.time for c in checkpoints})


def test_a_failing_checkpoint_is_logged_and_counted_and_loses_no_record(
        sqlite_url, tmp_path, caplog):
    key = tmp_path / "k"
    write_key_pair(key, "test.example/audit")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the directory should be")
    settings = Settings(checkpoint_every=2, checkpoint_interval=3600)
    caplog.set_level(logging.INFO, logger="streamwarden")
    with AuditLog.open(sqlite_url, settings=settings, checkpoint_dir=blocked,
                       checkpoint_key=key) as log:
        append(log, list(synthetic_records(5)))
        assert wait_until(lambda: log.checkpoint_failures >= 1)
        assert len(log.query()) == 5 and log.verify().ok
    assert "audit.checkpoint_failed" in caplog.text and "write_failed" in caplog.text
    assert load_signer(key).encode().split("+", 4)[4] not in caplog.text


def test_open_needs_both_checkpoint_settings(sqlite_url, tmp_path):
    with pytest.raises(InvalidInputError, match="both checkpoint_dir and checkpoint_key"):
        AuditLog.open(sqlite_url, checkpoint_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="cannot read the private key"):
        AuditLog.open(sqlite_url, checkpoint_dir=tmp_path, checkpoint_key=tmp_path / "none")


def test_a_log_without_checkpoints_cannot_write_one(sqlite_url):
    with AuditLog.open(sqlite_url) as log, pytest.raises(CheckpointError, match="without"):
        log.write_checkpoint()


def test_checkpoint_settings_from_the_environment():
    settings = Settings.from_env({"STREAMWARDEN_CHECKPOINT_DIR": "/var/ck",
                                  "STREAMWARDEN_CHECKPOINT_KEY": "/etc/k",
                                  "STREAMWARDEN_CHECKPOINT_EVERY": "50",
                                  "STREAMWARDEN_CHECKPOINT_INTERVAL": "2.5"})
    assert (settings.checkpoint_dir, settings.checkpoint_key, settings.checkpoint_every,
            settings.checkpoint_interval) == ("/var/ck", "/etc/k", 50, 2.5)
    with pytest.raises(InvalidInputError, match="STREAMWARDEN_CHECKPOINT_EVERY"):
        Settings.from_env({"STREAMWARDEN_CHECKPOINT_EVERY": "ten"})
    for bad in ({"checkpoint_every": 0}, {"checkpoint_every": True},
                {"checkpoint_interval": 0}, {"checkpoint_dir": ""}):
        with pytest.raises(InvalidInputError):
            Settings(**bad)


def test_the_verifier_type_is_a_value():
    signer = Signer.generate("v.example/k")
    assert Verifier.parse(signer.verifier.encode()) == signer.verifier
