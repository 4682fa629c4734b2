"""JSON from a bundle, parsed with bounds: size, nesting depth, element count; duplicate keys
and NaN/Infinity refused (two parsers must never read one document two ways)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_bytes: int
    max_depth: int = 32
    max_items: int = 2_000_000
    """Objects, arrays and scalars together: bounds the memory a small document may expand to."""


class JsonRefused(ValueError):
    """The text is not JSON, or breaks a bound. The message says which."""


def load_json(data: bytes, limits: JsonLimits) -> Any:
    """Parse `data` (UTF-8 JSON). Raises JsonRefused."""
    if len(data) > limits.max_bytes:
        raise JsonRefused(f"{len(data)} bytes, more than the {limits.max_bytes} allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise JsonRefused(f"nested deeper than {limits.max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    _check_shape(value, limits)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonRefused(f'the key "{key[:80]}" appears twice in one object')
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not JSON")


def _check_shape(value: Any, limits: JsonLimits) -> None:
    """Depth and element count, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    items = 0
    while stack:
        current, depth = stack.pop()
        items += 1
        if items > limits.max_items:
            raise JsonRefused(f"more than {limits.max_items} elements")
        if isinstance(current, dict | list):
            if depth > limits.max_depth:
                raise JsonRefused(f"nested deeper than {limits.max_depth} levels")
            children = current.values() if isinstance(current, dict) else current
            stack.extend((child, depth + 1) for child in children)
