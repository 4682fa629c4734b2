"""Factories for model signatures made with model-signing's own signing API (the real format):
EC keys, an X.509 chain (root, intermediate, code-signing leaf) made with `cryptography`, and
`sign_files`, which writes the files to a folder and signs it as `model_signing` signs a model
directory (the signature file itself left out)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import model_signing
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import json_format
from model_signing._signing import signing as ms_signing

SIGNATURE_FILE = "model.sig"


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: Path
    public: Path


@dataclass(frozen=True, slots=True)
class CertificateChain:
    """A root and an intermediate CA, and a leaf key + certificate that may sign code."""

    root: Path
    intermediate: Path
    leaf_key: Path
    leaf: Path


def make_key(folder: Path, name: str = "signer") -> KeyPair:
    """A P-256 key pair as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / f"{name}.key.pem"
    public = folder / f"{name}.pub.pem"
    private.write_bytes(_private_pem(key))
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(private, public)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=ca), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificate_chain(folder: Path, name: str = "corp") -> CertificateChain:
    """Root → intermediate → code-signing leaf, as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    middle_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate(f"{name} root", root_key, None, ca=True)
    middle = _certificate(f"{name} intermediate", middle_key, (f"{name} root", root_key), ca=True)
    leaf = _certificate(
        f"{name} model signer", leaf_key, (f"{name} intermediate", middle_key), ca=False
    )
    paths = CertificateChain(
        folder / f"{name}-root.pem",
        folder / f"{name}-intermediate.pem",
        folder / f"{name}-leaf.key.pem",
        folder / f"{name}-leaf.pem",
    )
    for path, cert in ((paths.root, root), (paths.intermediate, middle), (paths.leaf, leaf)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.leaf_key.write_bytes(_private_pem(leaf_key))
    return paths


def _model_folder(folder: Path, files: Mapping[str, bytes]) -> Path:
    model = folder / "model"
    for name, data in files.items():
        path = model / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return model


def _hashing() -> model_signing.hashing.Config:
    """model-signing's default hashing (sha256 of each whole file), the signature file left out
    as its CLI leaves it out."""
    config = model_signing.hashing.Config()  # type: ignore[no-untyped-call]  # unannotated
    return config.set_ignored_paths(paths=[SIGNATURE_FILE])


def _signing() -> model_signing.signing.Config:
    return model_signing.signing.Config()  # type: ignore[no-untyped-call]  # unannotated


def _sign(folder: Path, files: Mapping[str, bytes], config: model_signing.signing.Config) -> bytes:
    model = _model_folder(folder, files)
    hashing = _hashing()
    signature = folder / SIGNATURE_FILE
    config.set_hashing_config(hashing).sign(model, signature)
    return signature.read_bytes()


def sign_with_key(folder: Path, files: Mapping[str, bytes], key: KeyPair) -> bytes:
    """The `model.sig` of `files`, signed with `key` (model-signing's key signer)."""
    config = _signing().use_elliptic_key_signer(private_key=key.private)
    return _sign(folder, files, config)


def sign_with_certificate(
    folder: Path, files: Mapping[str, bytes], chain: CertificateChain
) -> bytes:
    """The `model.sig` of `files`, signed by the chain's leaf (model-signing's certificate
    signer; the bundle carries the leaf and the intermediate)."""
    config = _signing().use_certificate_signer(
        private_key=chain.leaf_key,
        signing_certificate=chain.leaf,
        certificate_chain=[chain.intermediate],
    )
    return _sign(folder, files, config)


# -- a Sigstore instance of the test's own ---------------------------------------------------
#
# A Fulcio root CA, a certificate transparency log key and a Rekor log key, all made here, and
# the trust config (trustedRoot + signingConfig) naming them: what `sigstore` verifies a bundle
# against without any network. `LocalSigstore.sign` builds the bundle Fulcio and Rekor would
# have produced for a model-signing statement: a short-lived leaf certificate for an identity
# (e-mail SAN, OIDC issuer extension, an embedded SCT from the CT log), the DSSE envelope the
# leaf key signs, and a Rekor v1 `dsse` entry with its signed inclusion promise and a
# checkpoint-signed inclusion proof (a one-entry log). Only the test's keys are trusted.

_OIDC_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_LOG_ORIGIN = "hubwarden-test-log"
_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(key: ec.EllipticCurvePrivateKey) -> bytes:
    return hashlib.sha256(_spki(key)).digest()


def _sign_sha256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _log_key(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, object]:
    return {
        "baseUrl": url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": _b64(_spki(key)),
            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            "validFor": {"start": "2020-01-01T00:00:00Z"},
        },
        "logId": {"keyId": _b64(_key_id(key))},
    }


def _service(url: str) -> dict[str, object]:
    return {"url": url, "majorApiVersion": 1, "validFor": {"start": "2020-01-01T00:00:00Z"},
            "operator": "hubwarden tests"}  # fmt: skip


@dataclass
class LocalSigstore:
    """A Sigstore instance of keys made for a test (see the comment above)."""

    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    rekor_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hubwarden tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "test fulcio")])  # fmt: skip
        public = self.root_key.public_key()
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.root_key, hashes.SHA256())
        )

    def trust_config(self, path: Path) -> Path:
        """Write the trust config (trustedRoot + signingConfig) naming only this instance."""
        trusted_root = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [_log_key(self.rekor_key, "https://rekor.test.invalid")],
            "certificateAuthorities": [{
                "subject": {"organization": "hubwarden tests", "commonName": "test fulcio"},
                "uri": "https://fulcio.test.invalid",
                "certChain": {"certificates": [
                    {"rawBytes": _b64(self.root.public_bytes(serialization.Encoding.DER))}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }],
            "ctlogs": [_log_key(self.ct_key, "https://ctfe.test.invalid")],
            "timestampAuthorities": [],
        }  # fmt: skip
        signing_config = {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [_service("https://fulcio.test.invalid")],
            "oidcUrls": [_service("https://oauth2.test.invalid/auth")],
            "rekorTlogUrls": [_service("https://rekor.test.invalid")],
            "tsaUrls": [],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaConfig": {"selector": "ANY"},
        }
        document = {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": trusted_root,
            "signingConfig": signing_config,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1))
        return path

    def sign(self, folder: Path, files: Mapping[str, bytes], identity: str, issuer: str) -> bytes:
        """The `model.sig` of `files` signed through this instance as `identity` from
        `issuer`."""
        model = _model_folder(folder, files)
        statement = ms_signing.Payload(_hashing().hash(model)).statement
        payload = json_format.MessageToJson(statement.pb).encode()
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = self._leaf(leaf_key, identity, issuer)
        pae = b"DSSEv1 %d %s %d %s" % (len(_PAYLOAD_TYPE), _PAYLOAD_TYPE.encode(),
                                       len(payload), payload)  # fmt: skip
        signature = _sign_sha256(leaf_key, pae)
        envelope: dict[str, object] = {"payload": _b64(payload), "payloadType": _PAYLOAD_TYPE,
                                       "signatures": [{"sig": _b64(signature)}]}  # fmt: skip
        bundle = {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(leaf.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [self._log_entry(leaf, payload, signature, envelope)],
            },
            "dsseEnvelope": envelope,
        }
        return json.dumps(bundle).encode()

    def _leaf(
        self, key: ec.EllipticCurvePrivateKey, identity: str, issuer: str
    ) -> x509.Certificate:
        """A Fulcio-like leaf with an SCT over its precertificate."""
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(minutes=10))
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(identity)]), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.UnrecognizedExtension(_OIDC_ISSUER_OID, issuer.encode()), critical=False
            )
        )
        timestamp_ms = int(now.timestamp() * 1000)
        draft = builder.add_extension(_sct_extension(b"\0" * 70, self.ct_key, 0), critical=False)
        tbs = draft.sign(self.root_key, hashes.SHA256()).tbs_precertificate_bytes
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp_ms, 1)
            + hashlib.sha256(self.root_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )).digest()
            + len(tbs).to_bytes(3, "big") + tbs
            + struct.pack("!H", 0)
        )  # fmt: skip
        sct = _sct_extension(_sign_sha256(self.ct_key, signed), self.ct_key, timestamp_ms)
        return builder.add_extension(sct, critical=False).sign(self.root_key, hashes.SHA256())

    def _log_entry(
        self,
        leaf: x509.Certificate,
        payload: bytes,
        signature: bytes,
        envelope: dict[str, object],
    ) -> dict[str, object]:
        """A Rekor v1 dsse entry in a one-entry log: SET and signed checkpoint."""
        pem = leaf.public_bytes(serialization.Encoding.PEM)
        body = rfc8785.dumps({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(
                    json.dumps(envelope).encode()).hexdigest()},
                "payloadHash": {"algorithm": "sha256",
                                "value": hashlib.sha256(payload).hexdigest()},
                "signatures": [{"signature": _b64(signature), "verifier": _b64(pem)}],
            },
        })  # fmt: skip
        key_id = _key_id(self.rekor_key)
        integrated = int(dt.datetime.now(dt.UTC).timestamp())
        promise = rfc8785.dumps({"body": _b64(body), "integratedTime": integrated,
                                 "logID": key_id.hex(), "logIndex": 0})  # fmt: skip
        root_hash = hashlib.sha256(b"\0" + body).digest()
        note = f"{_LOG_ORIGIN}\n1\n{_b64(root_hash)}\n"
        note_signature = _b64(key_id[:4] + _sign_sha256(self.rekor_key, note.encode()))
        return {
            "logIndex": "0",
            "logId": {"keyId": _b64(key_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {
                "signedEntryTimestamp": _b64(_sign_sha256(self.rekor_key, promise))
            },
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": _b64(root_hash),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": f"{note}\n\u2014 {_LOG_ORIGIN} {note_signature}\n"},
            },
            "canonicalizedBody": _b64(body),
        }


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, key_cert_sign=cert_sign, crl_sign=cert_sign,
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _sct_extension(
    signature: bytes, ct_key: ec.EllipticCurvePrivateKey, timestamp_ms: int
) -> x509.UnrecognizedExtension:
    """An embedded SCT list (RFC 6962 §3.3) holding one ECDSA-SHA256 SCT."""
    sct = (
        b"\0" + _key_id(ct_key) + struct.pack("!QH", timestamp_ms, 0)
        + bytes([4, 3]) + struct.pack("!H", len(signature)) + signature
    )  # fmt: skip
    listed = struct.pack("!H", len(sct)) + sct
    sct_list = struct.pack("!H", len(listed)) + listed
    der = b"\x04" + _der_length(len(sct_list)) + sct_list
    return x509.UnrecognizedExtension(_SCT_LIST_OID, der)


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets
