"""Values in the storage's attrs: chunked JSON records over the RDB column limit (the keys they
are stored under are :mod:`~optuna_biotune.evolution.layout`'s). No torch."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CHUNK", "read_chunked", "write_chunked"]

#: Longest attr value written in one piece (the RDB column limit of older Optuna schemas).
CHUNK = 2045
_CHUNK_MARK = "__chunks__"


# --------------------------------------------------------------------------- storage helpers


def write_chunked(set_attr: Callable[[str, Any], None], key: str, value: Any) -> None:
    """Write ``value`` under ``key``; over 2045 stored characters, as ``key:<i>`` pieces.

    A value whose JSON fits in 2045 characters is stored as is. A longer one is compressed
    (zlib, then base64, so no character needs escaping) and split into pieces of at most 2045
    stored characters, written first; the header ``{"__chunks__": n}`` is written last, so a
    reader never sees half a record.
    """
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    if len(text) <= CHUNK:
        set_attr(key, value)
        return
    packed = base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")
    size = CHUNK - 2  # the stored JSON string adds two quotes
    pieces = [packed[i : i + size] for i in range(0, len(packed), size)]
    for i, piece in enumerate(pieces):
        set_attr(f"{key}:{i}", piece)
    set_attr(key, {_CHUNK_MARK: len(pieces)})


def read_chunked(attrs: Mapping[str, Any], key: str) -> Any:
    """Read a value written by :func:`write_chunked` from an attrs mapping (``None`` if absent)."""
    value = attrs.get(key)
    if isinstance(value, dict) and _CHUNK_MARK in value:
        packed = "".join(attrs[f"{key}:{i}"] for i in range(int(value[_CHUNK_MARK])))
        return json.loads(zlib.decompress(base64.b64decode(packed)).decode("utf-8"))
    return value
