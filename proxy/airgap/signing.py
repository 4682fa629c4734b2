"""A Sigstore bundle over an in-toto statement: how a bundle's exporter vouches for its content.

    {
      "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
      "verificationMaterial": {"publicKey": {"hint": "<sha256 of the key's PEM, hex>"},
                               "tlogEntries": []},
      "dsseEnvelope": {
        "payload": "<base64 of the statement JSON>",
        "payloadType": "application/vnd.in-toto+json",
        "signatures": [{"keyid": "", "sig": "<base64 of the DER ECDSA P-256 SHA-256 signature>"}]
      }
    }

The signature covers DSSE's pre-authentication encoding (PAE) of the payload type and payload,
so neither can be swapped. The statement is in-toto Statement v1: `subject` lists
`{name, digest: {sha256}}` of what is signed, `predicateType`/`predicate` say what it means.
This is the envelope model-signing's key method writes and cosign's key mode
(`--new-bundle-format`) verifies; no transparency log entry, since an air gap has none.

Verification trusts nothing in the bundle but the bytes signed: the hint only picks which trusted
key to try first.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.airgap.errors import SignatureError
from proxy.airgap.jsonsafe import JsonLimits, JsonRefused, load_json
from proxy.airgap.keys import SigningKey, TrustedKey, bundle_hint
from proxy.errors import shown

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_TRUST_ADVICE = "trust the exporter's key with `hubwarden keys trust PUBLIC_KEY_FILE --name NAME`"


@dataclass(frozen=True, slots=True, order=True)
class Subject:
    """One signed thing: a name for humans and the sha256 (hex) of its bytes."""

    name: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Statement:
    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: Mapping[str, Any]


class Verified(NamedTuple):
    statement: Statement
    key_name: str


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body,
    lengths in bytes as ASCII decimal."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def statement_bytes(
    subjects: Sequence[Subject], predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    """The in-toto Statement v1 JSON that gets signed."""
    for subject in subjects:
        if not _SHA256_HEX.fullmatch(subject.sha256):
            raise ValueError(f"subject {subject.name!r} has no sha256 hex digest")
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": s.name, "digest": {"sha256": s.sha256}} for s in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    return json.dumps(document, indent=2, sort_keys=False).encode("utf-8")


def sign(
    subjects: Sequence[Subject],
    predicate_type: str,
    predicate: Mapping[str, Any],
    key: SigningKey,
) -> bytes:
    """The Sigstore bundle (JSON bytes) signing `subjects` with `key`."""
    payload = statement_bytes(subjects, predicate_type, predicate)
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": bundle_hint(key.public_key)},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode("ascii")}],
        },
    }
    return json.dumps(bundle, indent=2).encode("utf-8")


def verify(
    bundle: bytes,
    trusted_keys: Sequence[TrustedKey],
    expected_subjects: Collection[Subject] | None = None,
    *,
    predicate_type: str | None = None,
) -> Verified:
    """Check `bundle` was signed by one of `trusted_keys` and, when given, that it signs exactly
    `expected_subjects` (in any order) with `predicate_type`. Returns the statement and the
    trusted key's name.

    Raises SignatureError: bad JSON, wrong media or payload type, a certificate instead of a
    key, signature from no trusted key, bad signature, subjects not matching.
    """
    envelope, hint = _parse_bundle(bundle)
    payload = _b64(_field(envelope, "payload", str, "dsseEnvelope"), "dsseEnvelope.payload")
    signatures = _field(envelope, "signatures", list, "dsseEnvelope")
    if len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise SignatureError(
            f"the signature bundle holds {len(signatures)} signatures; a Sigstore bundle has one"
        )
    signature = _b64(_field(signatures[0], "sig", str, "signature"), "signature.sig")
    key_name = _check_signature(payload, signature, hint, trusted_keys)
    statement = _parse_statement(payload)
    if predicate_type is not None and statement.predicate_type != predicate_type:
        raise SignatureError(
            f'the signed statement is about "{shown(statement.predicate_type)}", not '
            f'"{predicate_type}": this is not a signature of a Hubwarden bundle'
        )
    if expected_subjects is not None:
        _match_subjects(statement.subjects, expected_subjects)
    return Verified(statement, key_name)


# -- parsing ------------------------------------------------------------------------------------


def _parse_bundle(bundle: bytes) -> tuple[dict[str, Any], str]:
    """The DSSE envelope and the key hint of a bundle, its shape checked."""
    if len(bundle) > MAX_BUNDLE_BYTES:
        raise SignatureError(f"the signature bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        document = load_json(bundle, JsonLimits(max_bytes=MAX_BUNDLE_BYTES))
    except JsonRefused as exc:
        raise SignatureError(f"the signature bundle is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SignatureError("the signature bundle is not a JSON object")
    media_type = document.get("mediaType")
    if media_type != BUNDLE_MEDIA_TYPE:
        raise SignatureError(
            f'the signature bundle has media type "{shown(media_type)}"; expected '
            f'"{BUNDLE_MEDIA_TYPE}"'
        )
    material = _field(document, "verificationMaterial", dict, "bundle")
    if "publicKey" not in material:
        kinds = ", ".join(sorted(shown(k) for k in material if k != "tlogEntries")) or "nothing"
        raise SignatureError(
            f"the signature bundle identifies its signer by {kinds}, not by a public key; "
            "Hubwarden trusts keys only"
        )
    public_key = _field(material, "publicKey", dict, "verificationMaterial")
    hint = public_key.get("hint", "")
    if not isinstance(hint, str):
        raise SignatureError("the signature bundle's publicKey.hint is not a string")
    if "dsseEnvelope" not in document:
        raise SignatureError(
            "the signature bundle holds no DSSE envelope (a bare message signature cannot "
            "sign an in-toto statement)"
        )
    envelope = _field(document, "dsseEnvelope", dict, "bundle")
    payload_type = envelope.get("payloadType")
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(
            f'the signature envelope has payload type "{shown(payload_type)}"; expected '
            f'"{PAYLOAD_TYPE}"'
        )
    return envelope, hint


def _check_signature(
    payload: bytes, signature: bytes, hint: str, trusted_keys: Sequence[TrustedKey]
) -> str:
    """The name of the trusted key whose signature this is. The hint is unauthenticated: it
    only narrows the keys tried; an empty hint tries them all."""
    if not trusted_keys:
        raise SignatureError(f"no key is trusted on this instance; {_TRUST_ADVICE}")
    candidates = [k for k in trusted_keys if k.answers_to(hint)] if hint else list(trusted_keys)
    if not candidates:
        raise SignatureError(
            f'the bundle is signed by a key that is not trusted here (hint "{shown(hint)}"); '
            + _TRUST_ADVICE
        )
    message = pae(PAYLOAD_TYPE, payload)
    for key in candidates:
        try:
            key.public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return key.name
    names = ", ".join(k.name for k in candidates)
    raise SignatureError(
        f"bad signature: it does not verify with the trusted key {names}; the bundle was "
        "altered after it was signed, or was not signed by that key"
    )


def _parse_statement(payload: bytes) -> Statement:
    try:
        document = load_json(payload, JsonLimits(max_bytes=MAX_BUNDLE_BYTES))
    except JsonRefused as exc:
        raise SignatureError(f"the signed statement is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f'the signed payload is not an in-toto statement ("{STATEMENT_TYPE}")')
    predicate_type = _field(document, "predicateType", str, "statement")
    predicate = document.get("predicate", {})
    if not isinstance(predicate, dict):
        raise SignatureError("the signed statement's predicate is not a JSON object")
    subjects: list[Subject] = []
    for entry in _field(document, "subject", list, "statement"):
        digest = entry.get("digest") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        sha256 = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(name, str) or not isinstance(sha256, str):
            raise SignatureError("a subject of the signed statement has no name or sha256 digest")
        if not _SHA256_HEX.fullmatch(sha256):
            raise SignatureError(f'subject "{shown(name)}" has a malformed sha256 digest')
        subjects.append(Subject(name, sha256))
    return Statement(tuple(subjects), predicate_type, predicate)


def _match_subjects(signed: Sequence[Subject], expected: Collection[Subject]) -> None:
    have, want = Counter(signed), Counter(expected)
    if have == want:
        return
    unsigned = sorted((want - have).elements())
    extra = sorted((have - want).elements())
    parts = []
    if unsigned:
        first = unsigned[0]
        parts.append(
            f"{len(unsigned)} not signed (first: {shown(first.name)} sha256:{first.sha256})"
        )
    if extra:
        first = extra[0]
        parts.append(
            f"{len(extra)} signed but absent (first: {shown(first.name)} sha256:{first.sha256})"
        )
    raise SignatureError(
        "the signature does not match the bundle's content: "
        + "; ".join(parts)
        + ". The bundle was altered after it was signed"
    )


def _field(document: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind):
        raise SignatureError(f'the signature bundle\'s {where} has no valid "{key}"')
    return value


def _b64(text: str, where: str) -> bytes:
    """Standard or URL-safe base64 (DSSE allows both), strictly decoded."""
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"the signature bundle's {where} is not base64") from None
