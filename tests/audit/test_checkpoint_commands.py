"""``audit keygen``, ``audit checkpoint``, ``audit verify`` with checkpoints, an expected head
or a bundle, and ``audit export --bundle``: output, exit codes, and every edit to a bundle
failing it (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from streamwarden.audit.notes import Signer
from tests.audit.anchored import ROWS, anchored_trail, behind_the_triggers, rows
from tests.cli_run import run, usage_error


@pytest.fixture
def trail(db_url, tmp_path):
    return anchored_trail(db_url, tmp_path)


def test_keygen_writes_a_private_0600_key_and_its_public_key(tmp_path, capsys):
    key = tmp_path / "audit.key"
    status, out, _ = run(capsys, "audit", "keygen", "-o", key, "--name", "t.example/audit")
    assert status == 0 and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    public = (tmp_path / "audit.key.pub").read_text().strip()
    assert f"public key: {public}" in out and public.startswith("t.example/audit+")
    assert key.read_text().split("+")[-1].strip() not in out
    status, _, err = run(capsys, "audit", "keygen", "-o", key)
    assert status == 1 and "refusing to overwrite" in err
    assert "name" in usage_error(capsys, "audit", "keygen", "-o", tmp_path / "x",
                                 "--name", "bad name")


def test_checkpoint_then_verify_text_and_json(trail, capsys):
    status, out, _ = run(capsys, "audit", "checkpoint", "--db", trail.url, "--dir",
                         trail.directory, "--key", trail.key)
    assert status == 0 and f"size {ROWS}" in out
    status, out, _ = run(capsys, "audit", "verify", "--db", trail.url, "--checkpoints",
                         trail.directory, "--public-key", f"{trail.key}.pub")
    head = rows(trail.url)[-1].row_hash
    assert status == 0 and out.startswith(f"OK: {ROWS} rows, chain intact\n")
    assert "checkpoints: 4 of test.example/audit verified; the newest covers seq 35" in out
    assert out.endswith(f"head: {ROWS}:{head}\n")
    status, out, _ = run(capsys, "audit", "verify", "--db", trail.url, "--checkpoints",
                         trail.directory, "--public-key", f"{trail.key}.pub", "--json")
    document = json.loads(out)
    assert status == 0 and document["ok"] is True and document["head_hash"] == head
    assert document["newest_checkpoint_size"] == ROWS and document["checkpoints"] == 4


def test_verify_exits_1_with_the_reason(trail, capsys):
    with behind_the_triggers(trail.url) as connection:
        connection.exec_driver_sql("DELETE FROM lifecycle_audit WHERE seq > 25")
    status, out, _ = run(capsys, "audit", "verify", "--db", trail.url, "--checkpoints",
                         trail.directory, "--public-key", f"{trail.key}.pub")
    assert status == 1 and out.startswith("BROKEN at seq 26 (truncated): the table ends at")
    status, out, _ = run(capsys, "audit", "verify", "--db", trail.url, "--checkpoints",
                         trail.directory, "--public-key", f"{trail.key}.pub", "--json")
    assert status == 1 and json.loads(out)["reason"] == "truncated"


def test_verify_without_checkpoints_prints_the_head_and_checks_an_expected_one(trail, capsys):
    head = rows(trail.url)[19].row_hash
    status, out, _ = run(capsys, "audit", "verify", "--db", trail.url)
    assert status == 0 and out.splitlines()[-1] == f"head: {ROWS}:{rows(trail.url)[-1].row_hash}"
    status, _, _ = run(capsys, "audit", "verify", "--db", trail.url, "--expect-head",
                       f"20:{head}")
    assert status == 0
    status, out, _ = run(capsys, "audit", "verify", "--db", trail.url, "--expect-head",
                         f"20:{'0' * 64}")
    assert status == 1 and "(rewritten)" in out


def test_verify_a_stale_newest_checkpoint(trail, capsys):
    status, out, _ = run(capsys, "audit", "verify", "--db", trail.url, "--checkpoints",
                         trail.directory, "--public-key", f"{trail.key}.pub", "--max-age",
                         "0.000001")
    assert status == 1 and "(stale)" in out


@pytest.mark.parametrize(("argv", "reason"), [
    (["--checkpoints", "ck"], "--checkpoints needs --public-key"),
    (["--expect-head", "12:zz"], "expected SEQ:HASH"),
    (["--max-age", "-1"], "must be a finite number of seconds > 0"),
    (["--public-key", "/nonexistent.pub"], "cannot read the public key"),
])
def test_verify_usage_errors_exit_2(capsys, argv, reason):
    assert reason in usage_error(capsys, "audit", "verify", *argv)


def test_verify_file_needs_only_the_bundle_and_key(trail, tmp_path, capsys):
    public = f"{trail.key}.pub"
    assert "--file verifies a bundle alone" in usage_error(
        capsys, "audit", "verify", "--file", tmp_path / "b", "--db", trail.url,
        "--public-key", public)
    assert "--file needs --public-key" in usage_error(capsys, "audit", "verify", "--file",
                                                      tmp_path / "b")


def test_export_bundle_usage_errors(trail, tmp_path, capsys):
    out = tmp_path / "b.jsonl"
    assert "--bundle needs --checkpoints and --public-key" in usage_error(
        capsys, "audit", "export", "--bundle", "-o", out, "--db", trail.url)
    assert "leave out --format" in usage_error(
        capsys, "audit", "export", "--bundle", "--format", "jsonl", "-o", out,
        "--checkpoints", trail.directory, "--public-key", f"{trail.key}.pub")
    assert "--format (or --bundle)" in usage_error(capsys, "audit", "export", "-o", out)


def export_bundle(trail, path, capsys, *filters: str) -> str:
    status, out, err = run(capsys, "audit", "export", "--bundle", "-o", path, "--db",
                           trail.url, "--checkpoints", trail.directory, "--public-key",
                           f"{trail.key}.pub", *filters)
    assert status == 0, err
    return out


def verify_file(trail, path, capsys, key=None) -> tuple[int, dict]:
    status, out, _ = run(capsys, "audit", "verify", "--file", path, "--public-key",
                         key or f"{trail.key}.pub", "--json")
    return status, json.loads(out)


def test_a_bundle_verifies_offline_and_covers_the_selection(trail, tmp_path, capsys):
    # corr-3 is in rows 4, 14, 24, 34; rows 31..35 are not covered by a checkpoint yet.
    assert status_of_uncovered(trail, tmp_path, capsys) == 1
    bundle = tmp_path / "b2.jsonl"
    out = export_bundle(trail, bundle, capsys, "--correlation-id", "corr-3", "--limit", "3")
    assert "exported records 4..30 (27) with 3 checkpoints" in out
    assert stat.S_IMODE(os.stat(bundle).st_mode) == 0o600
    status, document = verify_file(trail, bundle, capsys)
    assert status == 0 and document["ok"] and document["rows"] == 27
    assert document["head_seq"] == 30 and document["checkpoints"] == 3


def status_of_uncovered(trail, tmp_path, capsys) -> int:
    status, _, err = run(capsys, "audit", "export", "--bundle", "-o", tmp_path / "u.jsonl",
                         "--db", trail.url, "--checkpoints", trail.directory, "--public-key",
                         f"{trail.key}.pub")
    assert "no checkpoint covers seq 35 yet" in err
    assert not (tmp_path / "u.jsonl").exists()
    return status


def _edit_record(lines: list[str]) -> list[str]:
    index = next(i for i, line in enumerate(lines) if '"seq":12,' in line)
    lines[index] = lines[index].replace('"host":"h"', '"host":"x"')
    return lines


def _drop_record(lines: list[str]) -> list[str]:
    return [line for line in lines if '"seq":12,' not in line]


def _edit_checkpoint(lines: list[str]) -> list[str]:
    index = next(i for i, line in enumerate(lines) if line.startswith('{"checkpoint"'))
    lines[index] = lines[index].replace("\\n10\\n", "\\n11\\n", 1)
    return lines


def _drop_newest(lines: list[str]) -> list[str]:
    return [line for line in lines if '"seq":30,' not in line]


def _edit_header(lines: list[str]) -> list[str]:
    lines[0] = lines[0].replace('"first_seq":1', '"first_seq":2')
    return lines


def _nest_a_line(lines: list[str]) -> list[str]:
    # Python's JSON parser recurses: this depth raises RecursionError, not ValueError.
    lines[1] = '{"a":' * 100_000 + "1" + "}" * 100_000
    return lines


@pytest.mark.parametrize(("edit", "reason"), [
    (_edit_record, "edited"), (_drop_record, "deleted"), (_edit_checkpoint, "bad_signature"),
    (_drop_newest, "truncated"), (_edit_header, "malformed_bundle"),
    (_nest_a_line, "malformed_bundle"),
], ids=["edit a record", "drop a record", "edit a checkpoint", "drop the newest record",
        "edit the header", "a line nested too deeply"])
def test_any_edit_to_a_bundle_fails_it(trail, tmp_path, capsys, edit, reason):
    bundle = tmp_path / "b.jsonl"
    export_bundle(trail, bundle, capsys, "--limit", "30")
    assert verify_file(trail, bundle, capsys)[0] == 0
    lines = bundle.read_text().splitlines()
    bundle.write_text("\n".join(edit(lines)) + "\n")
    status, document = verify_file(trail, bundle, capsys)
    assert status == 1 and document["reason"] == reason, document


def test_a_bundle_with_another_key_fails(trail, tmp_path, capsys):
    bundle = tmp_path / "b.jsonl"
    export_bundle(trail, bundle, capsys, "--limit", "30")
    other = tmp_path / "other.pub"
    other.write_text(Signer.generate("test.example/audit").verifier.encode() + "\n")
    status, document = verify_file(trail, bundle, capsys, key=other)
    assert status == 1 and document["reason"] == "unknown_key"


def test_a_bundle_that_is_not_one_fails(tmp_path, capsys, trail):
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"format": "something else"}\n')
    status, document = verify_file(trail, junk, capsys)
    assert status == 1 and document["reason"] == "malformed_bundle"
