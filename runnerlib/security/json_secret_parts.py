"""The secret parts of a JSON document registered as one secret (a service-account key, GOOGLE_CREDENTIALS).

The document is masked whole and line by line, as it was registered. Tools reformat it: `jq .` indents it and
prints each field on a line of its own, `jq -r .private_key_id` prints one field bare, and `private_key`'s
`\\n` escapes become real line breaks. None of those is the registered text, so the fields went out in clear.
So when a registered value is a JSON object, its string fields that hold the secret parts are registered too:

- a field named like a secret part (its name contains key, secret, token, password, passwd, credential, auth
  or private: `private_key`, `private_key_id`, `client_secret`, `refresh_token`);
- any field whose value spans lines (a PEM key).

Other fields (`type`, `project_id`, `client_email`) are not: they are identifiers a log names all the time, and
masking them everywhere would hide what a job is doing without hiding anything secret. Nested objects and
arrays are read too (at most MAX_PARTS fields, MAX_DEPTH levels: a document is data, not a way to make the
runner work).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DOCUMENT = 1 << 20  # bytes: larger values are not read as documents
MAX_PARTS = 256
MAX_DEPTH = 8
_SECRET_PART = re.compile(r"key|secret|token|passw|credential|auth|private", re.IGNORECASE)


def secret_parts(value: bytes) -> list[bytes]:
    """The secret fields of `value` when it is a JSON object (see the module's docstring); [] otherwise.

    >>> secret_parts(b'{"type": "service_account", "private_key_id": "4f2a9c1e7b3d", "client_email": "a@b"}')
    [b'4f2a9c1e7b3d']
    """
    text = value.strip()
    if not text.startswith(b"{") or len(text) > MAX_DOCUMENT:
        return []
    try:
        document = json.loads(text)
    except ValueError:  # not JSON (or not UTF-8): a secret that only looks like it
        return []
    parts: list[bytes] = []
    _collect(document, "", 0, parts)
    return list(dict.fromkeys(parts))


def _collect(node: Any, name: str, depth: int, parts: list[bytes]) -> None:
    if len(parts) >= MAX_PARTS or depth > MAX_DEPTH:
        return
    if isinstance(node, dict):
        for key, child in node.items():
            _collect(child, str(key), depth + 1, parts)
    elif isinstance(node, list):
        for child in node:
            _collect(child, name, depth + 1, parts)
    elif isinstance(node, str) and (_SECRET_PART.search(name) or "\n" in node.strip()):
        parts.append(node.encode("utf-8", "surrogateescape"))
