"""Model signatures without a server: the adapter over model-signing, `judge_signature` (who
signed, trusted or not, valid or not; key, certificate chain and an offline Sigstore instance made
for the test), the revision report, and the policy rules that read a file's standing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from proxy.config import PolicySettings, RuleAction, TrustedSigner
from proxy.metadata import EntryType, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.models import SignatureStatus
from proxy.store.signatures import SignatureRecord, StoredFile, StoredRevision
from proxy.trust import model_signing_adapter as adapter
from proxy.trust.rules import Policy
from proxy.trust.signature_checks import judge_signature, recorded
from proxy.trust.signature_report import FileStanding, build_report, standing_of
from proxy.trust.signatures import FileSignature
from tests.signing import (
    LocalSigstore,
    make_certificate_chain,
    make_key,
    sign_with_certificate,
    sign_with_key,
)

FILES = {"config.json": b'{"a": 1}', "weights/model.safetensors": b"\0" * 64}
IDENTITY, ISSUER = "release@acme.example", "https://issuer.acme.example"
REPO = RepoRef.parse(RepoType.MODEL, "acme/model")


def _key_signer(path: Path) -> TrustedSigner:
    return TrustedSigner(("acme/*",), name="acme key", public_key=path)


def _sigstore_signer(identity: str = IDENTITY, issuer: str = ISSUER) -> TrustedSigner:
    return TrustedSigner(("acme/*",), name="acme CI", identity=identity, issuer=issuer)


def _payload_edited(signature: bytes) -> bytes:
    bundle = json.loads(signature)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(bundle).encode()


# -- the adapter: reading -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"mediaType": "application/json"}', "not a Sigstore bundle"),
        (b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}', "no DSSE envelope"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_read_signature_not_a_bundle_is_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(adapter.SignatureMalformed, match=reason):
        adapter.read_signature(data)


def test_read_signature_key_bundle_names_the_key_hint(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    facts = adapter.read_signature(sign_with_key(tmp_path / "s", FILES, key))
    assert facts.kind is adapter.SignerKind.KEY
    assert facts.claimed == f"key sha256:{adapter.key_hint(key.public)}"


def test_read_signature_certificate_bundle_names_the_leaf(tmp_path: Path) -> None:
    chain = make_certificate_chain(tmp_path)
    facts = adapter.read_signature(sign_with_certificate(tmp_path / "s", FILES, chain))
    assert (facts.kind, facts.claimed) == (
        adapter.SignerKind.CERTIFICATE,
        "certificate CN=corp model signer",
    )


# -- judging: keys and certificates --------------------------------------------------------


def test_judge_key_signature_by_the_trusted_key_is_verified_with_its_manifest(
    tmp_path: Path,
) -> None:
    key = make_key(tmp_path)
    judged = judge_signature(
        sign_with_key(tmp_path / "s", FILES, key), [_key_signer(key.public)], None, offline=True
    )
    assert (judged.status, judged.signer) == (SignatureStatus.VERIFIED, "acme key")
    assert judged.manifest is not None
    assert {f.name for f in judged.manifest.files} == set(FILES)
    assert "model.sig" in judged.manifest.ignore_paths


def test_judge_key_signature_by_another_key_is_untrusted(tmp_path: Path) -> None:
    trusted, other = make_key(tmp_path, "trusted"), make_key(tmp_path, "other")
    data = sign_with_key(tmp_path / "s", FILES, other)
    judged = judge_signature(data, [_key_signer(trusted.public)], None, offline=True)
    assert judged.status is SignatureStatus.UNTRUSTED_SIGNER
    assert judged.signer == f"key sha256:{adapter.key_hint(other.public)}"


def test_judge_key_signature_with_an_edited_statement_is_invalid(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    data = _payload_edited(sign_with_key(tmp_path / "s", FILES, key))
    judged = judge_signature(data, [_key_signer(key.public)], None, offline=True)
    assert judged.status is SignatureStatus.INVALID


def test_judge_signature_with_no_trusted_signer_is_untrusted(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    judged = judge_signature(sign_with_key(tmp_path / "s", FILES, key), [], None, offline=True)
    assert judged.status is SignatureStatus.UNTRUSTED_SIGNER
    assert judged.detail.endswith("trusted for this repo: nobody")


def test_judge_certificate_signature_chaining_to_the_trusted_root_is_verified(
    tmp_path: Path,
) -> None:
    chain = make_certificate_chain(tmp_path)
    signer = TrustedSigner(("acme/*",), certificate_chain=(chain.root,))
    data = sign_with_certificate(tmp_path / "s", FILES, chain)
    judged = judge_signature(data, [signer], None, offline=True)
    assert judged.status is SignatureStatus.VERIFIED


def test_judge_certificate_signature_from_another_root_is_untrusted(tmp_path: Path) -> None:
    signed_by = make_certificate_chain(tmp_path / "theirs", "theirs")
    trusted = make_certificate_chain(tmp_path / "ours", "ours")
    signer = TrustedSigner(("acme/*",), certificate_chain=(trusted.root,))
    data = sign_with_certificate(tmp_path / "s", FILES, signed_by)
    judged = judge_signature(data, [signer], None, offline=True)
    assert judged.status is SignatureStatus.UNTRUSTED_SIGNER
    assert "does not chain to a trusted certificate" in judged.detail


def test_judge_key_signature_when_only_identities_are_trusted_is_untrusted(
    tmp_path: Path,
) -> None:
    data = sign_with_key(tmp_path / "s", FILES, make_key(tmp_path))
    judged = judge_signature(data, [_sigstore_signer()], None, offline=True)
    assert judged.status is SignatureStatus.UNTRUSTED_SIGNER


# -- judging: Sigstore, offline, against a trust config made for the test ---------------------


@pytest.fixture(scope="module")
def sigstore() -> LocalSigstore:
    return LocalSigstore()


def test_judge_sigstore_signature_offline_with_the_trust_config_is_verified(
    sigstore: LocalSigstore, tmp_path: Path
) -> None:
    trust = sigstore.trust_config(tmp_path / "trust.json")
    data = sigstore.sign(tmp_path / "s", FILES, IDENTITY, ISSUER)
    judged = judge_signature(data, [_sigstore_signer()], trust, offline=True)
    assert (judged.status, judged.signer) == (SignatureStatus.VERIFIED, "acme CI")


@pytest.mark.parametrize(
    ("identity", "issuer"),
    [("intruder@evil.example", ISSUER), (IDENTITY, "https://issuer.evil.example")],
)
def test_judge_sigstore_signature_by_another_identity_is_untrusted(
    sigstore: LocalSigstore, tmp_path: Path, identity: str, issuer: str
) -> None:
    trust = sigstore.trust_config(tmp_path / "trust.json")
    data = sigstore.sign(tmp_path / "s", FILES, identity, issuer)
    judged = judge_signature(data, [_sigstore_signer()], trust, offline=True)
    assert judged.status is SignatureStatus.UNTRUSTED_SIGNER


def test_judge_sigstore_signature_from_another_instance_is_invalid(
    sigstore: LocalSigstore, tmp_path: Path
) -> None:
    trust = LocalSigstore().trust_config(tmp_path / "other-trust.json")
    data = sigstore.sign(tmp_path / "s", FILES, IDENTITY, ISSUER)
    judged = judge_signature(data, [_sigstore_signer()], trust, offline=True)
    assert judged.status is SignatureStatus.INVALID
    assert "certificate chain" in judged.detail


def test_judge_sigstore_signature_with_an_edited_statement_is_invalid(
    sigstore: LocalSigstore, tmp_path: Path
) -> None:
    trust = sigstore.trust_config(tmp_path / "trust.json")
    data = _payload_edited(sigstore.sign(tmp_path / "s", FILES, IDENTITY, ISSUER))
    judged = judge_signature(data, [_sigstore_signer()], trust, offline=True)
    assert judged.status is SignatureStatus.INVALID


def test_judge_sigstore_signature_offline_without_trust_config_is_unverifiable(
    sigstore: LocalSigstore, tmp_path: Path
) -> None:
    data = sigstore.sign(tmp_path / "s", FILES, IDENTITY, ISSUER)
    judged = judge_signature(data, [_sigstore_signer()], None, offline=True)
    assert judged.status is SignatureStatus.UNVERIFIABLE
    assert "offline" in judged.detail


# -- records and reports ---------------------------------------------------------------------

SIGNED = {"config.json": "a" * 64, "model.safetensors": "b" * 64}


def _verified(files: dict[str, str] = SIGNED) -> SignatureRecord:
    return SignatureRecord("c" * 40, SignatureStatus.VERIFIED, "acme key", "", "d" * 64, files,
                           ("model.sig", ".git", ".gitattributes"))  # fmt: skip


def _entry(path: str) -> TreeEntry:
    return TreeEntry(EntryType.FILE, path, "e" * 40, 1)


def test_recorded_verified_signature_with_a_signed_file_absent_is_invalid(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    judged = judge_signature(
        sign_with_key(tmp_path / "s", FILES, key), [_key_signer(key.public)], None, offline=True
    )
    record = recorded("c" * 40, judged, [_entry("config.json")], "d" * 64, "digest")
    assert record.status is SignatureStatus.INVALID
    assert record.detail == "signed files absent from the commit: weights/model.safetensors"


@pytest.mark.parametrize(
    ("path", "sha256", "standing"),
    [
        ("config.json", "a" * 64, FileStanding.COVERED),
        ("config.json", "f" * 64, FileStanding.MISMATCH),
        ("config.json", None, FileStanding.PENDING),
        ("extra.bin", "f" * 64, FileStanding.UNCOVERED),
        (".gitattributes", "f" * 64, FileStanding.IGNORED),
        (".git/config", "f" * 64, FileStanding.IGNORED),
        (".gitignore", "f" * 64, FileStanding.UNCOVERED),
    ],
)
def test_standing_of_a_file_against_a_verified_signature(
    path: str, sha256: str | None, standing: FileStanding
) -> None:
    assert standing_of(_verified(), path, sha256) is standing


def test_report_lfs_file_advertising_other_bytes_is_a_mismatch_before_any_fetch() -> None:
    stored = StoredRevision(False, (StoredFile("model.safetensors", None, "9" * 64,
                                               "not fetched"),))  # fmt: skip
    report = build_report(REPO, _verified(), stored, signature_file="model.sig", required=False)
    assert report.files == (("model.safetensors", FileStanding.MISMATCH),)
    assert report.status is SignatureStatus.INVALID


def test_report_complete_revision_missing_a_signed_file_is_invalid() -> None:
    stored = StoredRevision(True, (StoredFile("config.json", "a" * 64, None, "released"),))
    report = build_report(REPO, _verified(), stored, signature_file="model.sig", required=True)
    assert report.status is SignatureStatus.INVALID
    assert [f.code for f in report.findings] == ["SIGNATURE_FILE_MISSING"]


def test_report_uncovered_file_is_a_finding_of_a_still_verified_signature() -> None:
    stored = StoredRevision(True, (
        StoredFile("config.json", "a" * 64, None, "released"),
        StoredFile("model.safetensors", "b" * 64, "b" * 64, "released"),
        StoredFile("extra.py", "f" * 64, None, "quarantined"),
    ))  # fmt: skip
    report = build_report(REPO, _verified(), stored, signature_file="model.sig", required=False)
    assert report.status is SignatureStatus.VERIFIED
    assert report.summary == "verified by acme key"
    assert [(f.code, f.path) for f in report.findings] == [("SIGNATURE_FILE_UNCOVERED", "extra.py")]


# -- the policy rules ------------------------------------------------------------------------


def _hits(signature: FileSignature, *, required: bool, uncovered: RuleAction) -> list[str]:
    policy = Policy(PolicySettings())
    found = policy.signature_hits(REPO, signature, required=required, uncovered=uncovered)
    return [f"{hit.rule}:{hit.action.value}" for hit in found]


@pytest.mark.parametrize(
    ("status", "standing", "required", "uncovered", "expected"),
    [
        (SignatureStatus.VERIFIED, FileStanding.COVERED, True, RuleAction.HOLD, []),
        (SignatureStatus.VERIFIED, FileStanding.MISMATCH, False, RuleAction.HOLD,
         ["signature_invalid:hold"]),
        (SignatureStatus.VERIFIED, FileStanding.UNCOVERED, False, RuleAction.HOLD,
         ["uncovered_files:hold"]),
        (SignatureStatus.VERIFIED, FileStanding.UNCOVERED, False, RuleAction.ALLOW, []),
        (SignatureStatus.VERIFIED, FileStanding.UNCOVERED, True, RuleAction.REJECT,
         ["uncovered_files:reject", "require_signature:hold"]),
        (SignatureStatus.VERIFIED, FileStanding.IGNORED, True, RuleAction.HOLD, []),
        (SignatureStatus.INVALID, FileStanding.UNCHECKED, False, RuleAction.HOLD,
         ["signature_invalid:hold"]),
        (SignatureStatus.UNSIGNED, FileStanding.UNCHECKED, False, RuleAction.HOLD, []),
        (SignatureStatus.UNSIGNED, FileStanding.UNCHECKED, True, RuleAction.HOLD,
         ["require_signature:hold"]),
        (SignatureStatus.UNTRUSTED_SIGNER, FileStanding.UNCHECKED, False, RuleAction.HOLD, []),
        (SignatureStatus.UNVERIFIABLE, FileStanding.UNCHECKED, True, RuleAction.HOLD,
         ["require_signature:hold"]),
        (None, FileStanding.SIGNATURE, True, RuleAction.HOLD, []),
    ],
)  # fmt: skip
def test_signature_hits_of_a_file(
    status: SignatureStatus | None,
    standing: FileStanding,
    required: bool,
    uncovered: RuleAction,
    expected: list[str],
) -> None:
    signature = FileSignature(status, standing, "acme key", "why")
    assert _hits(signature, required=required, uncovered=uncovered) == expected
