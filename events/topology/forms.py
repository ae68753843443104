"""A query-protocol request's body (SNS's PublishBatch: every message body, attributes and
signature), form-encoded as botocore encodes it, at a fraction of its CPU.

botocore encodes such a body each time the body is read, twice a call (the signature's payload
hash, then the send), with urllib's quote_plus: a Python step per byte. ``form_encode`` gives the
same text (test_aws_client.py) with a table applied by str.translate, in C: 14 us for a 450-byte
event body, against 23 us joining a lookup per byte. aws.py has botocore's clients encode a body
once with it, before signing; direct.py builds PublishBatch's body with it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_UNRESERVED_BYTES = bytes(sorted(_UNRESERVED))
_FORM_BYTE = tuple(chr(b) if b in _UNRESERVED else "+" if b == 0x20 else f"%{b:02X}" for b in range(256))


def _form_value(value: str | bytes) -> str:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if not raw.rstrip(_UNRESERVED_BYTES):  # nothing to escape (urllib's own shortcut)
        return raw.decode("ascii")
    return raw.decode("latin-1").translate(_FORM_BYTE)  # a char per byte, each to its escape


def form_encode(params: dict[Any, Any]) -> str:
    """``urllib.parse.urlencode(params, doseq=True)``, as botocore calls it for a query-protocol
    body, for str and bytes keys and values (anything else goes to urlencode itself)."""
    if not all(isinstance(x, (str, bytes)) for item in params.items() for x in item):
        return urlencode(params, doseq=True)
    return "&".join(f"{_form_value(k)}={_form_value(v)}" for k, v in params.items())
