"""C2SP signed notes with Ed25519 keys: key files, signing and verifying.

A signed note (https://c2sp.org/signed-note) is UTF-8 text ending in a newline, a blank line,
then one or more signature lines ``— <key name> <base64(key id || signature)>``. The key id is
the first four bytes of ``SHA-256(key name || 0x0A || 0x01 || public key)`` (0x01: Ed25519).

Key files use the text encoding of Go's ``golang.org/x/mod/sumdb/note`` package, so other
signed-note tools can read them:

* private key: ``PRIVATE+KEY+<name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte seed)>``
* public key: ``<name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte public key)>``

The private key bytes never appear in a message, log line or ``repr``.

>>> signer = Signer.generate("example.org/audit")
>>> note = sign_note(b"hello\\n", [signer])
>>> open_note(note, [signer.verifier]).text
b'hello\\n'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from streamwarden.errors import CheckpointError, InvalidInputError

ED25519 = 0x01
SIGNATURE_DASH = "\u2014"
#: Largest note accepted (text and signatures), in bytes.
MAX_NOTE_BYTES = 64 * 1024
#: At most this many signature lines are read (the spec asks verifiers to accept 16).
MAX_SIGNATURES = 16
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_MAX_KEY_FILE = 4096
_MAX_NAME = 256


def check_key_name(name: object) -> str:
    """``name`` if it is a valid signed-note key name: 1..256 printable characters without
    spaces or ``+``.

    Raises:
        InvalidInputError: otherwise.

    Thread-safety: pure function.
    """
    if not isinstance(name, str) or not 1 <= len(name) <= _MAX_NAME:
        raise InvalidInputError(f"a key name must be 1..{_MAX_NAME} characters")
    if not name.isprintable() or any(ch.isspace() or ch == "+" for ch in name):
        raise InvalidInputError("a key name must be printable, without spaces or '+'")
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    """The four-byte signed-note key id of an Ed25519 ``public_key`` named ``name``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A trusted Ed25519 public key and its name.

    Thread-safety: immutable.
    """

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        """The signed-note key id (four bytes)."""
        return key_id(self.name, self.public_key)

    def encode(self) -> str:
        """The public key file's text (without newline)."""
        body = base64.b64encode(bytes([ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{body}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (64 bytes) is this key's Ed25519 signature of ``text``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except (InvalidSignature, ValueError):
            return False
        return True

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """A verifier from a public key file's text.

        Raises:
            InvalidInputError: if ``text`` is not an Ed25519 public key in that encoding, or its
                key id does not match its name and key.
        """
        name, key = _parse_key_text(text.strip(), "public key")
        return cls(name, key)


class Signer:
    """An Ed25519 private key and its name; signs notes.

    ``repr`` shows the name and key id only. Thread-safety: :meth:`sign` may be called from
    any thread.
    """

    def __init__(self, name: str, seed: bytes) -> None:
        """Raises InvalidInputError for a bad name or a seed that is not 32 bytes."""
        check_key_name(name)
        if len(seed) != 32:
            raise InvalidInputError("an Ed25519 private key is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = Verifier(name, public)
        self.name = name

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key named ``name``.

        Raises:
            InvalidInputError: if ``name`` is not a valid key name.
        """
        return cls(name, os.urandom(32))

    @classmethod
    def parse(cls, text: str) -> Signer:
        """A signer from a private key file's text.

        Raises:
            InvalidInputError: if it is not an Ed25519 private key in that encoding (the
                message never quotes the text).
        """
        text = text.strip()
        if not text.startswith(_PRIVATE_PREFIX):
            raise InvalidInputError("not a signed-note private key (PRIVATE+KEY+...)")
        name, seed = _parse_key_text(text.removeprefix(_PRIVATE_PREFIX), "private key",
                                     check_id=False)
        signer = cls(name, seed)
        if text.split("+", 4)[3] != signer.verifier.key_id.hex():
            raise InvalidInputError("the private key's key id does not match its key")
        return signer

    def encode(self) -> str:
        """The private key file's text (without newline). Keep it secret."""
        seed = self._key.private_bytes_raw()
        body = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.verifier.key_id.hex()}+{body}"

    def sign(self, text: bytes) -> bytes:
        """The Ed25519 signature (64 bytes) of ``text``."""
        return self._key.sign(text)

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.verifier.key_id.hex()!r})"


def _parse_key_text(text: str, what: str, *, check_id: bool = True) -> tuple[str, bytes]:
    parts = text.split("+", 2)  # base64 may hold "+": the key is the rest
    if len(parts) != 3:
        raise InvalidInputError(f"malformed {what}: expected NAME+KEYID+BASE64")
    name, hex_id, body = parts
    check_key_name(name)
    try:
        raw = base64.b64decode(body, validate=True)
        identifier = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"malformed {what}: bad key id or base64") from None
    if len(identifier) != 4 or len(raw) != 33 or raw[0] != ED25519:
        raise InvalidInputError(f"malformed {what}: not an Ed25519 key")
    if check_id and key_id(name, raw[1:]) != identifier:
        raise InvalidInputError(f"the {what}'s key id does not match its name and key")
    return name, raw[1:]


def _read_key_file(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if len(data) > _MAX_KEY_FILE:
        raise InvalidInputError(f"the {what} {path} is too large to be a key")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInputError(f"the {what} {path} is not a key file") from None


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """The private key in the file at ``path``.

    Raises:
        InvalidInputError: unreadable or malformed file (the message names the path, never
            the content).

    Thread-safety: safe from any thread.
    """
    target = Path(path)
    try:
        return Signer.parse(_read_key_file(target, "private key"))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc.message} ({target})") from None


def load_verifier(path: str | os.PathLike[str]) -> Verifier:
    """The public key in the file at ``path``.

    Raises:
        InvalidInputError: unreadable or malformed file.

    Thread-safety: safe from any thread.
    """
    target = Path(path)
    try:
        return Verifier.parse(_read_key_file(target, "public key"))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc.message} ({target})") from None


def key_exposed(path: str | os.PathLike[str]) -> bool:
    """Whether the key file at ``path`` can be read by its group or others (POSIX modes)."""
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_key_pair(path: str | os.PathLike[str], name: str) -> tuple[Path, Path, Verifier]:
    """Generate a key named ``name``; write the private key to ``path`` (mode 0600) and the
    public key to ``path + ".pub"``. Neither file may exist.

    Returns:
        The two paths and the public key.

    Raises:
        InvalidInputError: a bad name, or either file exists.
        OSError: the files cannot be written (nothing is left behind).

    Thread-safety: safe from any thread.
    """
    private = Path(path)
    public = private.with_name(private.name + ".pub")
    signer = Signer.generate(name)
    for target in (private, public):
        if os.path.lexists(target):
            raise InvalidInputError(f"{target} exists; refusing to overwrite a key")
    _create_exclusive(private, (signer.encode() + "\n").encode(), 0o600)
    try:
        _create_exclusive(public, (signer.verifier.encode() + "\n").encode(), 0o644)
    except BaseException:
        private.unlink(missing_ok=True)
        raise
    return private, public, signer.verifier


@dataclass(frozen=True)
class OpenedNote:
    """A note whose signatures were checked.

    Attributes:
        text: the signed text (ending in a newline).
        signed_by: the names of the trusted keys whose signatures verified, in note order.
    """

    text: bytes
    signed_by: tuple[str, ...]


def sign_note(text: bytes, signers: Sequence[Signer]) -> bytes:
    """``text`` (UTF-8, ending in a newline) as a signed note, signed by every signer.

    Raises:
        InvalidInputError: no signer, or ``text`` is not a valid note text.

    Thread-safety: pure function.
    """
    if not signers:
        raise InvalidInputError("a signed note needs at least one key")
    _check_text(text)
    lines = [text, b"\n"]
    for signer in signers:
        blob = signer.verifier.key_id + signer.sign(text)
        line = f"{SIGNATURE_DASH} {signer.name} {base64.b64encode(blob).decode()}\n"
        lines.append(line.encode())
    return b"".join(lines)


def _check_text(text: bytes) -> str:
    if not text.endswith(b"\n"):
        raise InvalidInputError("a note's text must end with a newline")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("a note must be UTF-8") from None
    if any(ord(ch) < 0x20 and ch != "\n" for ch in decoded):
        raise InvalidInputError("a note must not contain control characters")
    return decoded


def split_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
    """The text of ``note`` and its signatures as ``(key name, key id, signature)``.

    Raises:
        CheckpointError: the note is too large, not UTF-8, has control characters, or its
            signature block is malformed.

    Thread-safety: pure function.
    """
    if len(note) > MAX_NOTE_BYTES:
        raise CheckpointError(f"note larger than {MAX_NOTE_BYTES} bytes")
    cut = note.rfind(b"\n\n")
    if cut < 0:
        raise CheckpointError("note has no signature block")
    text, block = note[:cut + 1], note[cut + 2:]
    try:
        _check_text(text)
        lines = _check_text(block).splitlines() if block else []
    except InvalidInputError as exc:
        raise CheckpointError(f"malformed note: {exc.message}") from None
    if not lines or len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"a note needs 1..{MAX_SIGNATURES} signature lines")
    return text, [_signature(line) for line in lines]


def _signature(line: str) -> tuple[str, bytes, bytes]:
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != SIGNATURE_DASH or not parts[1]:
        raise CheckpointError("malformed signature line")
    try:
        blob = base64.b64decode(parts[2], validate=True)
    except binascii.Error:
        raise CheckpointError("malformed signature line: bad base64") from None
    if len(blob) < 5:
        raise CheckpointError("malformed signature line: too short")
    return parts[1], blob[:4], blob[4:]


def open_note(note: bytes, verifiers: Sequence[Verifier]) -> OpenedNote:
    """Check ``note``'s signatures against the trusted ``verifiers`` (signed-note rules):
    signatures from unknown keys are ignored, every signature from a trusted key must verify,
    and at least one must.

    Raises:
        CheckpointError: the note is malformed, a trusted key's signature does not verify
            (message starts with ``bad signature``), or no trusted key signed it (``no
            signature by a trusted key``).

    Thread-safety: pure function.
    """
    text, signatures = split_note(note)
    trusted = {(v.name, v.key_id): v for v in verifiers}
    signed_by: list[str] = []
    for name, identifier, signature in signatures:
        verifier = trusted.get((name, identifier))
        if verifier is None:
            continue
        if not verifier.verify(text, signature):
            raise CheckpointError(f"bad signature by key {name}", reason="bad_signature")
        signed_by.append(name)
    if not signed_by:
        raise CheckpointError("no signature by a trusted key", reason="unknown_key")
    return OpenedNote(text, tuple(signed_by))
