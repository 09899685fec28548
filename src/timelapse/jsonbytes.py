"""JSON as bytes, fast: orjson when it is there (it is a dependency), the standard library if not.

Events are serialized one by one as they happen (see ``writer.py``), so this is on the hot path.
"""

from __future__ import annotations

import json
from typing import Any

from_json = json.loads   # reading back is for tests and tools (json_format.JsonValues.decode)

_json_dumps = json.JSONEncoder(ensure_ascii=False, check_circular=False, separators=(",", ":")).encode


def _to_json_stdlib(obj: Any) -> bytes:
    # Lone surrogates never get here (the encoder replaces them); "replace" is the safety net.
    return _json_dumps(obj).encode("utf-8", "replace")


try:
    import orjson

    _orjson_dumps = orjson.dumps
    _orjson_error = orjson.JSONEncodeError

    def to_json(obj: Any) -> bytes:
        """``obj`` (JSON-shaped) as compact UTF-8 JSON."""
        try:
            return _orjson_dumps(obj)
        except _orjson_error:  # a lone surrogate, an int beyond 64 bits: the careful path
            return _to_json_stdlib(obj)

except ImportError:  # pragma: no cover - orjson is a dependency; this keeps a broken install working
    to_json = _to_json_stdlib
