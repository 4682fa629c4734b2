"""Request bodies, parsed as hostile input: bounded in size, field count and nesting, decoded
only with the charsets we know, and every way one can be malformed a 400 saying which.

Only the two shapes the Hub's clients send are read (hub-protocol.md §3.5): a form
(`application/x-www-form-urlencoded`) and JSON. aiohttp's own `post()` is not used: it looks up
whatever codec the `charset` parameter names (an unknown one raises LookupError), and parses
multipart bodies no client of ours sends. `request_body` reads a body once per request and keeps
it, for edges where two steps read the same form (the admin pages' CSRF check, then the handler).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aiohttp import web

from proxy.errors import InvalidInput

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# Charsets a form may declare (as the WHATWG names them); JSON is UTF-8 only (RFC 8259).
FORM_CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "us-ascii": "ascii", "iso-8859-1": "latin-1"}


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int = 1024 * 1024
    max_fields: int = 2000


@dataclass(frozen=True, slots=True)
class Body:
    """A parsed body: each key's text values (form keys repeat; JSON lists become values)."""

    fields: dict[str, list[str]]

    def strings(self, key: str) -> list[str]:
        return self.fields.get(key, [])


_PARSED_BODY = web.RequestKey("hubwarden_parsed_body", Body)


async def request_body(request: web.Request, limits: BodyLimits = BodyLimits()) -> Body:
    """The form or JSON body of `request`, read and parsed on the first call and kept on the
    request for the next ones (the first call's `limits` apply). Raises InvalidInput as
    `read_form_or_json` does."""
    body = request.get(_PARSED_BODY)
    if body is None:
        body = await read_form_or_json(request, limits)
        request[_PARSED_BODY] = body
    return body


async def read_form_or_json(request: web.Request, limits: BodyLimits = BodyLimits()) -> Body:
    """The form or JSON body of `request`. Raises InvalidInput naming what is wrong."""
    media_type = request.content_type
    raw = await _read_bounded(request, limits.max_bytes)
    if not raw:
        return Body({})
    if media_type == JSON:
        return _json_body(raw, request.charset, limits)
    if media_type == FORM:
        return _form_body(raw, request.charset, limits)
    raise InvalidInput(
        "Content-Type",
        request.headers.get("Content-Type", ""),
        f"is not accepted here; send {FORM} (as huggingface_hub does) or {JSON}",
    )


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise InvalidInput("request body", f"{declared} bytes", f"is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise InvalidInput("request body", f"over {limit} bytes", "is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _text(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            "request body", f"byte {exc.start}", f"is not valid {charset} text; send UTF-8"
        ) from exc


def _form_body(raw: bytes, charset: str | None, limits: BodyLimits) -> Body:
    codec = FORM_CHARSETS.get((charset or "utf-8").lower())
    if codec is None:
        raise InvalidInput(
            "Content-Type charset", charset or "", "is not supported; send the form in UTF-8"
        )
    try:
        pairs = parse_qsl(
            _text(raw, codec),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=limits.max_fields,
        )
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            "form field", "…", "holds percent-escapes that are not UTF-8 text"
        ) from exc
    except ValueError as exc:  # more fields than max_num_fields
        raise InvalidInput("form", "…", f"has more than {limits.max_fields} fields") from exc
    fields: dict[str, list[str]] = {}
    for key, value in pairs:
        fields.setdefault(key, []).append(_unicode(value, key))
    return Body(fields)


def _json_body(raw: bytes, charset: str | None, limits: BodyLimits) -> Body:
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise InvalidInput("Content-Type charset", charset, "is not supported; JSON is UTF-8")
    text = _text(raw, "utf-8")
    try:
        document = json.loads(text)
    except RecursionError as exc:
        raise InvalidInput("JSON body", "…", "is not JSON we accept: nested too deeply") from exc
    except ValueError as exc:
        raise InvalidInput("JSON body", "…", f"is not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise InvalidInput("JSON body", "…", "must be an object")
    fields: dict[str, list[str]] = {}
    for key, value in document.items():
        values = value if isinstance(value, list) else [value]
        strings = [_unicode(v, key) for v in values if isinstance(v, str)]
        if len(strings) > limits.max_fields:
            raise InvalidInput(f"JSON {key}", "…", f"has more than {limits.max_fields} items")
        fields[_unicode(key, "JSON key")] = strings
    return Body(fields)


def _unicode(value: str, what: str) -> str:
    """`value` if it can be stored and sent on: JSON's `\\ud800` escapes make lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            what, value, "holds a lone surrogate (an unpaired \\ud800-\\udfff): not valid text"
        ) from exc
    return value
