"""Judging a signature's bytes: who signed, whether that signer is trusted for the repo, and
what the signature covers. Pure and blocking (the library's checks, and for Sigstore without a
trust config the network): `Signatures` runs `judge_signature` on a worker thread.

A signature whose signer kind (key, certificate, Sigstore identity) no trusted signer of the repo
has is `untrusted_signer` without further work; each trusted signer of that kind is then tried:
a signature made by another key, a certificate chaining to no trusted root, or another identity
is `untrusted_signer`; one that claims the trusted signer and does not verify is `invalid`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.config import ConfigError, SigningSettings, TrustedSigner
from proxy.errors import shown
from proxy.metadata import TreeEntry
from proxy.store.models import SignatureStatus
from proxy.store.signatures import SignatureRecord
from proxy.trust import model_signing_adapter as adapter
from proxy.trust.signature_report import MAX_NAMED, named


@dataclass(frozen=True, slots=True)
class Judged:
    """What signature bytes prove: a status, the signer (trusted label or who it claims to
    be), why not verified, and the signed manifest when verified."""

    status: SignatureStatus
    signer: str
    detail: str
    manifest: adapter.SignedManifest | None = None


def _kind(signer: TrustedSigner) -> adapter.SignerKind:
    if signer.identity:
        return adapter.SignerKind.SIGSTORE
    if signer.public_key is not None:
        return adapter.SignerKind.KEY
    return adapter.SignerKind.CERTIFICATE


def _verify(
    data: bytes, signer: TrustedSigner, trust_config: Path | None, offline: bool
) -> adapter.SignedManifest:
    if signer.identity:
        return adapter.verify_with_sigstore(
            data, signer.identity, signer.issuer, trust_config, allow_network=not offline
        )
    if signer.public_key is not None:
        return adapter.verify_with_key(data, signer.public_key)
    return adapter.verify_with_certificates(data, signer.certificate_chain)


def _usable(manifest: adapter.SignedManifest) -> str:
    """Why the manifest cannot be compared with stored sha256 digests ("" when it can)."""
    if manifest.method != "files":
        return f'signed with "{shown(manifest.method)}" serialization'
    odd = sorted({f.algorithm for f in manifest.files} - {"sha256"})
    if odd or manifest.hash_type not in ("sha256", ""):
        return f"signed with {shown(odd[0] if odd else manifest.hash_type)} digests"
    return ""


def judge_signature(
    data: bytes, signers: Sequence[TrustedSigner], trust_config: Path | None, *, offline: bool
) -> Judged:
    """What signature bytes prove for a repo whose trusted signers are `signers`."""
    try:
        facts = adapter.read_signature(data)
    except adapter.SignatureMalformed as exc:
        return Judged(SignatureStatus.INVALID, "", f"malformed signature file: {exc.detail}")
    candidates = [s for s in signers if _kind(s) is facts.kind]
    if not candidates:
        trusted = ", ".join(s.label for s in signers[:MAX_NAMED]) or "nobody"
        detail = f"signed by {facts.claimed}; trusted for this repo: {trusted}"
        return Judged(SignatureStatus.UNTRUSTED_SIGNER, facts.claimed, detail)
    refusals: list[str] = []
    for signer in candidates:
        try:
            manifest = _verify(data, signer, trust_config, offline)
        except adapter.SignerUntrusted as exc:
            refusals.append(exc.detail)
            continue
        except (adapter.SignatureInvalid, adapter.SignatureMalformed) as exc:
            return Judged(SignatureStatus.INVALID, facts.claimed, exc.detail)
        except adapter.SignatureUnverifiable as exc:
            return Judged(SignatureStatus.UNVERIFIABLE, facts.claimed, exc.detail)
        unusable = _usable(manifest)
        if unusable:
            detail = f"{unusable}; this mirror compares the sha256 of whole files (the default)"
            return Judged(SignatureStatus.UNVERIFIABLE, signer.label, detail)
        return Judged(SignatureStatus.VERIFIED, signer.label, "", manifest)
    return Judged(SignatureStatus.UNTRUSTED_SIGNER, facts.claimed, refusals[0])


def check_trust(settings: SigningSettings) -> str:
    """The digest of the trust files' contents; raises ConfigError for unusable ones."""
    keys = [s.public_key for s in settings.trusted if s.public_key is not None]
    chains = [s.certificate_chain for s in settings.trusted if s.certificate_chain]
    trust_config = settings.sigstore_trust_config
    try:
        adapter.check_trust_files(keys, chains, trust_config)
    except adapter.SignatureUnverifiable as exc:
        raise ConfigError(
            f"[signing]: {exc.detail}; fix the file or the setting that names it",
            source="signing",
            key="signing.trusted" if trust_config is None else "signing.sigstore_trust_config",
        ) from exc
    digest = hashlib.sha256()
    for path in [*keys, *(p for chain in chains for p in chain), trust_config]:
        if path is not None:
            digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def recorded(
    commit: str,
    judged: Judged,
    listing: Sequence[TreeEntry] | None,
    signature_sha256: str,
    digest: str,
) -> SignatureRecord:
    """The record of a judged signature; a verified one whose signed files are not all in the
    commit's `listing` (None: not known) is invalid (model-signing refuses a model with
    missing files too)."""
    manifest = judged.manifest
    files = {f.name: f.digest for f in manifest.files} if manifest is not None else {}
    status, detail = judged.status, judged.detail
    if status is SignatureStatus.VERIFIED and listing is not None:
        present = {e.path for e in listing}
        missing = sorted(set(files) - present)
        if missing:
            status = SignatureStatus.INVALID
            detail = f"signed files absent from the commit: {named(missing)}"
    ignored = manifest.ignore_paths if manifest is not None else ()
    return SignatureRecord(commit, status, judged.signer, detail, signature_sha256, files,
                           ignored, digest)  # fmt: skip
