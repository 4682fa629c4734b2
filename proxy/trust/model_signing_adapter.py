"""The one place that calls into `model-signing` (and the `sigstore` library under it).

A model signature (OpenSSF model-signing, `model.sig`) is a Sigstore bundle v0.3 whose DSSE
envelope carries an in-toto statement: every file of the model as `{name, algorithm, digest}`,
and the paths the signer left out (`ignore_paths`). Its verification material says who signed:
an EC public key (only a hint of it: the sha256 of its PEM), an X.509 certificate chain, or a
Sigstore (Fulcio) certificate with a transparency log entry.

`model_signing.verifying.Config.verify` needs the model's files on disk and hashes them again.
Hubwarden already verified and hashed every file it keeps, so it calls the library's private
verifiers instead (`model_signing._signing.*`): they check the signature and return the signed
manifest, which the caller compares with the hashes it stored. Those modules are private: this
module pins the behaviour to `model-signing==1.1.1` and is the only one to touch them.

Errors: `SignatureMalformed` (not a signature this code can read), `SignatureInvalid` (it does
not verify), `SignerUntrusted` (made by someone else than the trusted signer), and
`SignatureUnverifiable` (cannot be checked with what is configured). All functions are blocking
and pure CPU (key and certificate checks) or, for Sigstore without a trust config, reach the
network (TUF): callers run them on a worker thread and decide before whether that is allowed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

MAX_SIGNATURE_BYTES = 16 * 1024 * 1024
MAX_SIGNED_FILES = 100_000
MAX_TEXT = 300
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES = (BUNDLE_MEDIA_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3")
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
# Fulcio's OIDC issuer extensions: v1 (raw string) and v2 (DER UTF8String).
_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


class SignatureProblem(Exception):
    """A signature that does not prove what it should; `detail` says why, for people."""

    def __init__(self, detail: str) -> None:
        self.detail = _cut(detail)
        super().__init__(self.detail)


class SignatureMalformed(SignatureProblem):
    """The signature file is not a model-signing bundle this code can read."""


class SignatureInvalid(SignatureProblem):
    """The signature does not verify: the signed statement or its signature were altered, or
    the signing certificate is not valid for signing."""


class SignerUntrusted(SignatureProblem):
    """The signature was made by someone other than the signer trusted for the repo (another
    key, a certificate chaining to no trusted root, another Sigstore identity)."""


class SignatureUnverifiable(SignatureProblem):
    """The signature cannot be checked with what is configured (a trusted key or chain file
    that cannot be used, a Sigstore trust config that cannot be read)."""


class SignerKind(enum.StrEnum):
    """How a signature names its signer."""

    KEY = "key"
    CERTIFICATE = "certificate"
    SIGSTORE = "sigstore"


@dataclass(frozen=True, slots=True)
class SignatureFacts:
    """What a signature says about itself, before anything is verified: the kind of signer
    and who it claims to be (a key hint, a certificate subject, a Sigstore identity)."""

    kind: SignerKind
    claimed: str


@dataclass(frozen=True, slots=True)
class SignedFile:
    """One file of a signed manifest: its path in the repo, the hash algorithm and digest."""

    name: str
    algorithm: str
    digest: str


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """What a verified signature covers: the files and the paths the signer left out.
    `method` is "files" (a digest per whole file) or "shards"; `hash_type` e.g. sha256."""

    model_name: str
    method: str
    hash_type: str
    files: tuple[SignedFile, ...]
    ignore_paths: tuple[str, ...]


def _cut(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


# -- reading a signature without verifying it --------------------------------------------------


def _bundle_json(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_SIGNATURE_BYTES:
        raise SignatureMalformed(f"larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SignatureMalformed(f"not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise SignatureMalformed("not a JSON object")
    if document.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        raise SignatureMalformed(
            f"media type {document.get('mediaType')!r} is not a Sigstore bundle v0.3"
        )
    envelope = document.get("dsseEnvelope")
    if not isinstance(envelope, dict) or not envelope.get("signatures"):
        raise SignatureMalformed("no DSSE envelope with a signature")
    if not isinstance(document.get("verificationMaterial"), dict):
        raise SignatureMalformed("no verification material")
    return document


def _certificate(raw: object) -> x509.Certificate:
    if not isinstance(raw, str):
        raise SignatureMalformed("a certificate is not base64 text")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise SignatureMalformed(f"a certificate cannot be read ({exc})") from exc


def _leaf(material: dict[str, Any]) -> x509.Certificate:
    chain = material.get("x509CertificateChain")
    if isinstance(chain, dict):
        certificates = chain.get("certificates")
        if not isinstance(certificates, list) or not certificates:
            raise SignatureMalformed("an empty certificate chain")
        first = certificates[0]
        return _certificate(first.get("rawBytes") if isinstance(first, dict) else None)
    single = material.get("certificate")
    return _certificate(single.get("rawBytes") if isinstance(single, dict) else None)


def _subject(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        return f"CN={names[0].value!s}"
    return certificate.subject.rfc4514_string() or "an unnamed subject"


def _sans(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    values: list[str] = []
    for kind in (x509.RFC822Name, x509.UniformResourceIdentifier):
        values.extend(str(v) for v in extension.value.get_values_for_type(kind))
    return values


def _issuer(certificate: x509.Certificate) -> str:
    for oid in (_ISSUER_V1, _ISSUER_V2):
        try:
            value = certificate.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = getattr(value, "value", b"")
        if oid == _ISSUER_V2 and len(raw) > 2:
            raw = raw[2:]  # DER UTF8String: tag and a short length
        return bytes(raw).decode("utf-8", "replace")
    return "an unknown issuer"


def read_signature(data: bytes) -> SignatureFacts:
    """Who a signature file claims made it, without verifying anything.
    Raises SignatureMalformed."""
    material = _bundle_json(data)["verificationMaterial"]
    if isinstance(material.get("publicKey"), dict):
        hint = material["publicKey"].get("hint")
        claimed = f"key sha256:{hint}" if isinstance(hint, str) and hint else "a key (no hint)"
        return SignatureFacts(SignerKind.KEY, _cut(claimed))
    if isinstance(material.get("x509CertificateChain"), dict):
        return SignatureFacts(
            SignerKind.CERTIFICATE, _cut(f"certificate {_subject(_leaf(material))}")
        )
    if isinstance(material.get("certificate"), dict):
        leaf = _leaf(material)
        who = ", ".join(_sans(leaf)) or _subject(leaf)
        return SignatureFacts(SignerKind.SIGSTORE, _cut(f"{who} (issuer {_issuer(leaf)})"))
    raise SignatureMalformed("no public key, certificate chain or Sigstore certificate")


# -- trust anchors ---------------------------------------------------------------------------


def key_hint(public_key_pem: Path) -> str:
    """The hint a key-signed bundle carries for `public_key_pem`: the sha256 of its PEM.
    Raises SignatureUnverifiable when the file is not an EC public key model-signing takes."""
    key = _public_key(public_key_pem)
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def _public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureUnverifiable(f"trusted key {path} cannot be read ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
        raise SignatureUnverifiable(
            f"trusted key {path} is not an EC public key on {', '.join(SUPPORTED_CURVES)}"
        )
    return key


def check_trust_files(
    public_keys: Sequence[Path], chains: Sequence[Sequence[Path]], trust_config: Path | None
) -> None:
    """Refuse trust anchors that can never verify anything: keys and certificate files that
    do not load, a Sigstore trust config without both `trustedRoot` and `signingConfig`.
    Raises SignatureUnverifiable naming the file."""
    for path in public_keys:
        _public_key(path)
    for chain in chains:
        for path in chain:
            try:
                if not x509.load_pem_x509_certificates(path.read_bytes()):
                    raise ValueError("no certificate in it")
            except (OSError, ValueError) as exc:
                raise SignatureUnverifiable(
                    f"trusted certificate file {path} cannot be read ({exc})"
                ) from exc
    if trust_config is not None:
        _client_trust_config(trust_config)


def _client_trust_config(path: Path) -> Any:
    from sigstore.models import ClientTrustConfig

    try:
        return ClientTrustConfig.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise SignatureUnverifiable(
            f"Sigstore trust config {path} cannot be used: it must hold both trustedRoot and "
            f"signingConfig ({reason})"
        ) from exc


# -- verification ------------------------------------------------------------------------------

# What the library raises on input it cannot use: malformed statements, unexpected types.
_LIBRARY_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError)


@contextlib.contextmanager
def _signature_file(data: bytes) -> Iterator[Path]:
    """The bytes as a file: the library reads signatures only from paths, and its readers
    adjust older bundles on the way in (we want exactly its parsing)."""
    with tempfile.TemporaryDirectory(prefix="hubwarden-sig-") as folder:
        path = Path(folder) / "model.sig"
        path.write_bytes(data)
        yield path


def _manifest(manifest: Any) -> SignedManifest:
    serialization_type = dict(manifest.serialization_type)
    files = tuple(
        SignedFile(str(rd.identifier), str(rd.digest.algorithm), rd.digest.digest_hex)
        for rd in manifest.resource_descriptors()
    )
    if len(files) > MAX_SIGNED_FILES:
        raise SignatureMalformed(f"more than {MAX_SIGNED_FILES} files signed")
    ignored = serialization_type.get("ignore_paths") or ()
    return SignedManifest(
        model_name=str(manifest.model_name),
        method=str(serialization_type.get("method", "")),
        hash_type=str(serialization_type.get("hash_type", "")),
        files=files,
        ignore_paths=tuple(str(p) for p in ignored),
    )


def _check_signing_usage(certificate: x509.Certificate) -> None:
    """The library logs a deprecated warning for a certificate without KeyUsage before it
    accepts or refuses it; refuse such certificates here so it never gets that far."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise SignatureInvalid("the signing certificate has no KeyUsage extension") from None
    if usage.digital_signature:
        return
    try:
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise SignatureInvalid("the signing certificate may not sign (KeyUsage)") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise SignatureInvalid("the signing certificate may not sign (KeyUsage)")


def verify_with_key(data: bytes, public_key_pem: Path) -> SignedManifest:
    """The manifest of a key-signed signature, verified with `public_key_pem`. Raises
    SignatureMalformed, SignerUntrusted (another key's hint), SignatureInvalid."""
    from model_signing._signing import sign_ec_key, sign_sigstore_pb

    material = _bundle_json(data)["verificationMaterial"]
    if not isinstance(material.get("publicKey"), dict):
        raise SignerUntrusted(f"signed by {read_signature(data).claimed}, not by a key")
    hint = material["publicKey"].get("hint")
    expected = key_hint(public_key_pem)
    if hint and hint != expected:
        raise SignerUntrusted(f"signed by key sha256:{hint}, not the trusted sha256:{expected}")
    verifier = sign_ec_key.Verifier(public_key_pem)
    with _signature_file(data) as path:
        try:
            signature = sign_sigstore_pb.Signature.read(path)
        except (*_LIBRARY_ERRORS, json.JSONDecodeError) as exc:
            raise SignatureMalformed(f"the bundle cannot be read ({exc})") from exc
    # The library prints a warning on stdout for an old bundle without a hint: swallowed (the
    # swap of sys.stdout is process-wide, so only then).
    quiet = contextlib.redirect_stdout(io.StringIO()) if not hint else contextlib.nullcontext()
    try:
        with quiet:
            return _manifest(verifier.verify(signature))
    except InvalidSignature as exc:
        raise SignatureInvalid("the signature does not match the signed statement") from exc
    except _LIBRARY_ERRORS as exc:
        raise SignatureInvalid(str(exc) or type(exc).__name__) from exc


def verify_with_certificates(data: bytes, chain: Sequence[Path]) -> SignedManifest:
    """The manifest of a certificate-signed signature whose chain leads to a certificate of
    `chain` (root and intermediates, PEM files). Raises SignatureMalformed, SignerUntrusted
    (no path to a trusted certificate), SignatureInvalid."""
    from model_signing._signing import sign_certificate, sign_sigstore_pb
    from OpenSSL.crypto import X509StoreContextError

    material = _bundle_json(data)["verificationMaterial"]
    if not isinstance(material.get("x509CertificateChain"), dict):
        raise SignerUntrusted(f"signed by {read_signature(data).claimed}, not a certificate")
    _check_signing_usage(_leaf(material))
    verifier = sign_certificate.Verifier(list(chain))
    with _signature_file(data) as path:
        try:
            signature = sign_sigstore_pb.Signature.read(path)
        except (*_LIBRARY_ERRORS, json.JSONDecodeError) as exc:
            raise SignatureMalformed(f"the bundle cannot be read ({exc})") from exc
    try:
        return _manifest(verifier.verify(signature))
    except X509StoreContextError as exc:
        claimed = read_signature(data).claimed
        raise SignerUntrusted(f"{claimed} does not chain to a trusted certificate ({exc})") from exc
    except InvalidSignature as exc:
        raise SignatureInvalid("the signature does not match the signed statement") from exc
    except _LIBRARY_ERRORS as exc:
        raise SignatureInvalid(str(exc) or type(exc).__name__) from exc


def verify_with_sigstore(
    data: bytes, identity: str, issuer: str, trust_config: Path | None, *, allow_network: bool
) -> SignedManifest:
    """The manifest of a Sigstore-signed signature by `identity` (a certificate SAN) from the
    OIDC `issuer`, against `trust_config` (JSON with `trustedRoot` and `signingConfig`; None:
    the public-good instance, fetched over the network by TUF, unless `allow_network` is false:
    then SignatureUnverifiable). Raises SignatureMalformed, SignerUntrusted (another identity or
    issuer), SignatureInvalid, SignatureUnverifiable."""
    from model_signing._signing import sign_sigstore
    from sigstore.errors import Error as SigstoreError
    from sigstore.verify.policy import Identity

    material = _bundle_json(data)["verificationMaterial"]
    if not isinstance(material.get("certificate"), dict):
        raise SignerUntrusted(f"signed by {read_signature(data).claimed}, not through Sigstore")
    try:  # who it claims to be first: another identity is no forgery, only not trusted
        Identity(identity=identity, issuer=issuer).verify(_leaf(material))
    except (SigstoreError, *_LIBRARY_ERRORS) as exc:
        raise SignerUntrusted(f"signed by {read_signature(data).claimed} ({exc})") from exc
    if trust_config is None and not allow_network:
        # Without a trust config the library asks the public-good TUF repository: never offline.
        raise SignatureUnverifiable(
            "offline, and no [signing] sigstore_trust_config to verify a Sigstore signature "
            "without the network"
        )
    if trust_config is not None:
        _client_trust_config(trust_config)  # a clear message for a bad file
    try:
        verifier = sign_sigstore.Verifier(
            identity=identity, oidc_issuer=issuer, trust_config=trust_config
        )
    except (SigstoreError, *_LIBRARY_ERRORS, OSError) as exc:
        raise SignatureUnverifiable(f"the Sigstore trust root cannot be loaded ({exc})") from exc
    with _signature_file(data) as path:
        try:
            signature = sign_sigstore.Signature.read(path)
        except (SigstoreError, *_LIBRARY_ERRORS) as exc:
            raise SignatureMalformed(f"the bundle cannot be read ({exc})") from exc
    try:
        return _manifest(verifier.verify(signature))
    except (SigstoreError, InvalidSignature, *_LIBRARY_ERRORS) as exc:
        raise SignatureInvalid(str(exc) or type(exc).__name__) from exc
