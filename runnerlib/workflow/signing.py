"""Signed trigger messages on stdout: what makes the stdout transport unforgeable by untrusted steps.

The worker reads the job's stdout, where untrusted steps print too. So every trigger message runnerlib emits
is signed with an Ed25519 key pair made for this one job (`TriggerSigner.generate()`); the private key lives
only in the runner's memory (never a file, never the environment of a step), the public key is written to
`<workspace>/trigger-signing.pub` (a place untrusted steps cannot write) and announced on stdout before any
step runs. A line an untrusted step prints, however well it copies the format, has no valid signature.

Message format (one line of JSON, UTF-8, on the runner's stdout):

    {"reactorcide_trigger": 1, "key_id": "<16 hex>", "payload": "<JSON text>", "signature": "<base64>"}

- `payload` is a JSON *string* holding the document; the signature covers exactly its UTF-8 bytes, so a
  verifier in any language needs no canonical JSON: decode the line, take the string, verify, then parse it.
- signed bytes = b"reactorcide-trigger-v1\\n" + payload bytes (domain separation: a signature made for some
  other purpose with the same key can never be replayed as a trigger);
- the payload: {"type": "trigger_job", "operation_id", "trigger_type": "runnerlib", "jobs": [...],
  "job_id": REACTORCIDE_JOB_ID, "seq": n (0, 1, ... per job), "issued_at": unix seconds};
- `key_id` = the first 16 hex digits of SHA-256 of the raw 32-byte public key.

Key announcement (printed once, before any step's output):

    {"reactorcide_trigger_key": 1, "job_id": "...", "key_id": "...", "public_key": "ed25519:<base64 raw>"}

Example::

    signer = TriggerSigner.generate()
    line = signer.sign_document({"type": "trigger_job", "operation_id": "...", "jobs": [...]}, job_id="42")
    verify_message(line, signer.public_key_text())["jobs"]
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "DOMAIN",
    "InvalidTriggerMessage",
    "TriggerSigner",
    "is_trigger_line",
    "load_public_key",
    "public_key_from_announcement",
    "verify_message",
]

DOMAIN = b"reactorcide-trigger-v1\n"
MESSAGE_KEY = "reactorcide_trigger"
ANNOUNCE_KEY = "reactorcide_trigger_key"
PUBLIC_KEY_FILE = "trigger-signing.pub"
# A line longer than this is not ours (the worker should not buffer unbounded lines either).
MAX_LINE_BYTES = 4 * 1024 * 1024


class InvalidTriggerMessage(ValueError):
    """A line that claims to be a trigger message and is not a valid, correctly signed one."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_id_of(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


class TriggerSigner:
    """The job's signing key. Create it before the first step runs; keep it in the runner's memory only."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._raw_public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(self._raw_public)
        self._seq = 0

    @classmethod
    def generate(cls) -> TriggerSigner:
        return cls(Ed25519PrivateKey.generate())

    def __repr__(self) -> str:  # never show key material
        return f"TriggerSigner(key_id={self.key_id})"

    def public_key_text(self) -> str:
        """The public key as "ed25519:<base64 of the raw 32 bytes>" (what `load_public_key` reads)."""
        return "ed25519:" + _b64(self._raw_public)

    def public_key_pem(self) -> str:
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def announcement(self, job_id: str | None) -> str:
        """The one-line key announcement to print before any step runs."""
        return json.dumps({ANNOUNCE_KEY: 1, "job_id": job_id or "", "key_id": self.key_id,
                           "public_key": self.public_key_text()}, separators=(",", ":"))

    def write_public_key(self, path: str | os.PathLike[str]) -> Path:
        """Write the public key (PEM, then the ed25519: line) to `path`, replacing any file there."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        text = self.public_key_pem() + self.public_key_text() + "\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def sign_payload(self, payload: str) -> str:
        """Sign a payload (JSON text) and return the one-line message."""
        signature = self._private_key.sign(DOMAIN + payload.encode("utf-8"))
        return json.dumps({MESSAGE_KEY: 1, "key_id": self.key_id, "payload": payload,
                           "signature": _b64(signature)}, separators=(",", ":"))

    def sign_document(self, document: dict[str, Any], *, job_id: str | None) -> str:
        """Sign a trigger document (one operation), adding job_id, seq and issued_at to it."""
        payload = {**document, "job_id": job_id or "", "seq": self._seq, "issued_at": int(time.time())}
        self._seq += 1
        # ensure_ascii: the payload is pure ASCII, so its bytes are the same whichever JSON library decodes it.
        return self.sign_payload(json.dumps(payload, separators=(",", ":"), ensure_ascii=True, sort_keys=True))


def load_public_key(value: str | bytes | os.PathLike[str] | Ed25519PublicKey) -> Ed25519PublicKey:
    """A public key from "ed25519:<base64>", bare base64 of 32 bytes, PEM text, or a file holding any of them.

    A file written by `TriggerSigner.write_public_key` holds PEM and the ed25519: line; the PEM is used.
    """
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, os.PathLike) or (isinstance(value, str) and os.path.isfile(value)):
        text = Path(value).read_text(encoding="ascii", errors="replace")
    elif isinstance(value, bytes):
        text = value.decode("ascii", errors="replace")
    else:
        text = value
    text = text.strip()
    try:
        if "-----BEGIN PUBLIC KEY-----" in text:
            key = serialization.load_pem_public_key(text.encode("ascii"))
            if not isinstance(key, Ed25519PublicKey):
                raise InvalidTriggerMessage("the public key is not an Ed25519 key")
            return key
        raw = base64.b64decode(text.removeprefix("ed25519:"), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        if isinstance(exc, InvalidTriggerMessage):
            raise
        raise InvalidTriggerMessage(
            'the public key must be "ed25519:<base64>", PEM, or a file holding one'
        ) from None


def is_trigger_line(line: str | bytes) -> bool:
    """True if the line claims to be a trigger message (so it must verify, or be reported as forged)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    return f'"{MESSAGE_KEY}"' in line


def public_key_from_announcement(line: str) -> Ed25519PublicKey:
    """The key of an announcement line. Trust only the FIRST one on the stream, printed before any step."""
    try:
        data = json.loads(line)
    except ValueError:
        raise InvalidTriggerMessage("not a key announcement (not JSON)") from None
    if not isinstance(data, dict) or data.get(ANNOUNCE_KEY) != 1 or not isinstance(data.get("public_key"), str):
        raise InvalidTriggerMessage("not a key announcement")
    return load_public_key(data["public_key"])


def verify_message(line: str | bytes, public_key: Any, *, job_id: str | None = None,
                   kind: str | None = "trigger_job") -> dict[str, Any]:
    """Verify one stdout line and return its payload (the trigger document); InvalidTriggerMessage if not valid.

    `public_key` is anything `load_public_key` accepts. With `job_id`, the payload must name that job. `kind`:
    the document type accepted (None: any signed document, for a reader that knows other types, such as
    workflow/output_lines.py's "workflow_output"; the caller then checks the type).
    """
    key = load_public_key(public_key)
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise InvalidTriggerMessage("line too long")
        try:
            line = line.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise InvalidTriggerMessage("not UTF-8") from None
    if len(line) > MAX_LINE_BYTES:
        raise InvalidTriggerMessage("line too long")
    try:
        data = json.loads(line)
    except ValueError:
        raise InvalidTriggerMessage("not a JSON object") from None
    if not isinstance(data, dict) or data.get(MESSAGE_KEY) != 1:
        raise InvalidTriggerMessage(f'not a trigger message ("{MESSAGE_KEY}": 1 missing)')
    payload, signature = data.get("payload"), data.get("signature")
    if not isinstance(payload, str) or not isinstance(signature, str):
        raise InvalidTriggerMessage("payload and signature must be strings")
    raw_key = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if data.get("key_id") != key_id_of(raw_key):
        raise InvalidTriggerMessage("signed with another key (key_id does not match this job's key)")
    try:
        sig = base64.b64decode(signature, validate=True)
        key.verify(sig, DOMAIN + payload.encode("utf-8"))
    except (binascii.Error, ValueError, InvalidSignature):
        raise InvalidTriggerMessage("bad signature: not emitted by this job's runner") from None
    document = json.loads(payload)
    if not isinstance(document, dict) or (kind is not None and document.get("type") != kind) \
            or (document.get("type") == "trigger_job" and not isinstance(document.get("jobs"), list)):
        raise InvalidTriggerMessage(f"signed payload is not a {kind or 'signed'} document")
    if job_id is not None and document.get("job_id") != job_id:
        raise InvalidTriggerMessage(f"signed for job {document.get('job_id')!r}, not {job_id!r}")
    return document


def emit_stdout_line(line: str) -> None:
    # Write to the real stdout fd's stream and flush: the worker reads it line by line as the job runs.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def start_trigger_signing(
    workspace: str | os.PathLike[str] | None,
    *,
    job_id: str | None = None,
    emit: Callable[[str], None] | None = None,
) -> TriggerSigner:
    """Make the job's signing key, write <workspace>/trigger-signing.pub, print the announcement line.

    Call before source preparation (the runner does), so the announcement precedes any output that an
    untrusted source or step can cause.
    """
    signer = TriggerSigner.generate()
    if workspace is not None:
        signer.write_public_key(Path(workspace) / PUBLIC_KEY_FILE)
    (emit or emit_stdout_line)(signer.announcement(job_id))
    return signer
