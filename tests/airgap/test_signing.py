"""The Sigstore bundle: DSSE envelope over an in-toto statement, signed with ECDSA P-256."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.airgap import signing
from proxy.airgap.errors import SignatureError
from proxy.airgap.keys import KeyStore, SigningKey, TrustedKey, bundle_hint
from proxy.airgap.signing import Subject

PREDICATE = "https://example.test/predicate/v1"
SUBJECTS = [Subject("manifest:a", "a" * 64), Subject("state:a", "b" * 64)]


def _bundle(key: SigningKey, subjects: list[Subject] = SUBJECTS) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(signing.sign(subjects, PREDICATE, {"n": 1}, key))
    return document


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def _payload(document: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    return payload


def test_pae_matches_the_dsse_specification_example() -> None:
    assert (
        signing.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_sign_writes_a_sigstore_v03_bundle_with_a_dsse_in_toto_envelope(key: SigningKey) -> None:
    document = _bundle(key)
    assert document["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert document["verificationMaterial"] == {
        "publicKey": {"hint": bundle_hint(key.public_key)},
        "tlogEntries": [],
    }
    envelope = document["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [""]
    statement = _payload(document)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [
        {"name": "manifest:a", "digest": {"sha256": "a" * 64}},
        {"name": "state:a", "digest": {"sha256": "b" * 64}},
    ]
    assert (statement["predicateType"], statement["predicate"]) == (PREDICATE, {"n": 1})


def test_signature_is_der_ecdsa_p256_sha256_over_the_pae(key: SigningKey) -> None:
    envelope = _bundle(key)["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    assert signature[0] == 0x30  # an ASN.1 SEQUENCE: DER, not raw r||s
    key.public_key.verify(
        signature, signing.pae(envelope["payloadType"], payload), ec.ECDSA(hashes.SHA256())
    )


def test_verify_returns_the_statement_and_the_trusted_key_name(
    key: SigningKey, trusted: list[TrustedKey]
) -> None:
    statement, name = signing.verify(
        signing.sign(SUBJECTS, PREDICATE, {}, key),
        trusted,
        reversed(SUBJECTS),  # type: ignore[arg-type]
        predicate_type=PREDICATE,
    )
    assert name == "dmz"
    assert statement.subjects == tuple(SUBJECTS)


def test_verify_finds_the_key_among_several(
    tmp_path: Path, key: SigningKey, importer: KeyStore
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    importer.trust(SigningKey(other).info.pem.encode(), "another")
    assert signing.verify(
        signing.sign(SUBJECTS, PREDICATE, {}, key), importer.trusted()
    ).key_name == ("dmz")


def test_verify_without_a_hint_tries_every_trusted_key(
    key: SigningKey, trusted: list[TrustedKey]
) -> None:
    document = _bundle(key)
    document["verificationMaterial"]["publicKey"] = {}
    assert signing.verify(_encode(document), trusted).key_name == "dmz"


def test_verify_accepts_cosigns_base64_der_hint(key: SigningKey, trusted: list[TrustedKey]) -> None:
    document = _bundle(key)
    der_digest = bytes.fromhex(key.info.fingerprint)
    document["verificationMaterial"]["publicKey"]["hint"] = base64.b64encode(der_digest).decode()
    assert signing.verify(_encode(document), trusted).key_name == "dmz"


# -- refusals -----------------------------------------------------------------------------------


def test_verify_refuses_a_key_nobody_trusted(trusted: list[TrustedKey]) -> None:
    stranger = SigningKey(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SignatureError, match=r"not trusted here.*keys trust"):
        signing.verify(signing.sign(SUBJECTS, PREDICATE, {}, stranger), trusted)


def test_verify_refuses_a_stranger_claiming_a_trusted_keys_hint(
    key: SigningKey, trusted: list[TrustedKey]
) -> None:
    stranger = SigningKey(ec.generate_private_key(ec.SECP256R1()))
    document = json.loads(signing.sign(SUBJECTS, PREDICATE, {}, stranger))
    document["verificationMaterial"]["publicKey"]["hint"] = bundle_hint(key.public_key)
    with pytest.raises(SignatureError, match=r"bad signature.*dmz"):
        signing.verify(_encode(document), trusted)


def test_verify_with_no_trusted_key_says_how_to_trust_one(key: SigningKey) -> None:
    with pytest.raises(SignatureError, match="no key is trusted on this instance"):
        signing.verify(signing.sign(SUBJECTS, PREDICATE, {}, key), [])


def test_verify_refuses_an_altered_payload(key: SigningKey, trusted: list[TrustedKey]) -> None:
    document = _bundle(key)
    statement = _payload(document)
    statement["subject"][0]["digest"]["sha256"] = "c" * 64
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(SignatureError, match="bad signature"):
        signing.verify(_encode(document), trusted)


def test_verify_refuses_a_payload_type_swapped_after_signing(
    key: SigningKey, trusted: list[TrustedKey]
) -> None:
    document = _bundle(key)
    document["dsseEnvelope"]["payloadType"] = "application/json"
    with pytest.raises(SignatureError, match='payload type "application/json"'):
        signing.verify(_encode(document), trusted)


def test_verify_refuses_subjects_that_do_not_match_the_bundle(
    key: SigningKey, trusted: list[TrustedKey]
) -> None:
    bundle = signing.sign(SUBJECTS, PREDICATE, {}, key)
    forged = [SUBJECTS[0], Subject("state:a", "d" * 64)]
    with pytest.raises(SignatureError, match=r"1 not signed \(first: state:a sha256:d+\)"):
        signing.verify(bundle, trusted, forged)


def test_verify_refuses_a_subject_signed_but_absent(
    key: SigningKey, trusted: list[TrustedKey]
) -> None:
    with pytest.raises(SignatureError, match="1 signed but absent"):
        signing.verify(signing.sign(SUBJECTS, PREDICATE, {}, key), trusted, SUBJECTS[:1])


def test_verify_refuses_another_predicate_type(key: SigningKey, trusted: list[TrustedKey]) -> None:
    bundle = signing.sign(SUBJECTS, "https://model_signing/signature/v1.0", {}, key)
    with pytest.raises(SignatureError, match="not a signature of a Hubwarden bundle"):
        signing.verify(bundle, trusted, predicate_type=PREDICATE)


def _mutated(key: SigningKey, path: list[str], value: Any) -> bytes:
    document = _bundle(key)
    target = document
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return _encode(document)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["mediaType"], "application/vnd.dev.sigstore.bundle+json;version=0.1", "media type"),
        (["verificationMaterial", "publicKey"], _DELETE, "not by a public key"),
        (["dsseEnvelope"], _DELETE, "no DSSE envelope"),
        (["dsseEnvelope", "signatures"], [], "holds 0 signatures"),
        (["dsseEnvelope", "payload"], "***", "payload is not base64"),
        (["dsseEnvelope", "payload"], base64.b64encode(b"[1]").decode(), "bad signature"),
        (["verificationMaterial", "publicKey", "hint"], 5, "hint is not a string"),
    ],
    ids=[
        "media-type",
        "certificate",
        "no-envelope",
        "no-signature",
        "payload-b64",
        "payload",
        "hint",
    ],
)
def test_verify_refuses_a_malformed_bundle(
    key: SigningKey, trusted: list[TrustedKey], path: list[str], value: Any, message: str
) -> None:
    bundle = _mutated(key, path, value)
    with pytest.raises(SignatureError, match=message):
        signing.verify(bundle, trusted)


def test_verify_refuses_a_certificate_bundle_naming_what_it_holds(
    key: SigningKey, trusted: list[TrustedKey]
) -> None:
    document = _bundle(key)
    document["verificationMaterial"] = {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": []}
    with pytest.raises(SignatureError, match="identifies its signer by certificate"):
        signing.verify(_encode(document), trusted)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"mediaType": 1, "mediaType": 2}', "appears twice"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b"\xff\xfe", "not UTF-8"),
    ],
    ids=["syntax", "array", "duplicate-key", "deep", "encoding"],
)
def test_verify_refuses_what_is_not_a_json_bundle(
    trusted: list[TrustedKey], data: bytes, message: str
) -> None:
    with pytest.raises(SignatureError, match=message):
        signing.verify(data, trusted)


def test_verify_refuses_an_oversize_bundle(trusted: list[TrustedKey]) -> None:
    with pytest.raises(SignatureError, match="larger than"):
        signing.verify(b" " * (signing.MAX_BUNDLE_BYTES + 1), trusted)


def test_statement_digest_is_what_the_subject_says(key: SigningKey) -> None:
    data = b"blob"
    subject = Subject("x", hashlib.sha256(data).hexdigest())
    statement = _payload(_bundle(key, [subject]))
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(data).hexdigest()
