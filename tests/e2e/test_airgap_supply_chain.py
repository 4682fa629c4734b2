"""Issue 11 through the air gap: the AI-BOM of every exported revision travels inside the signed
bundle, and `hubwarden import` verifies the imported repos' OpenSSF model signatures offline, as
the server does when it fetches, with the real `hubwarden export` / `hubwarden import` commands.

Instance A (online) mirrors six fake-Hub repos: `acme/signed-model` signed with a P-256 key,
`acme/tampered-model` whose config.json was changed after signing, `acme/bad-signature` whose
signature bytes were altered, `acme/sigstore-model` signed by a CI identity of a Sigstore made
for the test, an unsigned tiny model and a parquet dataset. A trusts no signer, so it serves them
all, and exports them in one bundle. Each B is offline and imports under the armed socket guard
(no connection at all: B is not even serving), with `[signing]` trusting the key for `acme/*`
(and the CI identity, with the Sigstore trust config or without) and requiring a signature
there, or trusting another key.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from safetensors.numpy import save

from proxy.airgap import bundle as bundle_lib
from proxy.airgap import oci
from proxy.airgap.keys import KeyStore, TrustedKey, parse_public_key
from tests.dbplugin import run_isolated
from tests.e2e import test_offline
from tests.e2e.test_airgap import arun, run, snapshot, status_of, write_config
from tests.e2e.test_offline import SocketGuard
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import build_tiny_model_files, make_parquet_dataset, make_tiny_model
from tests.signing import SIGNATURE_FILE, KeyPair, LocalSigstore, make_key, sign_with_key

socket_guard = test_offline.socket_guard  # the fixture, shared
SIGNED = "acme/signed-model"
TAMPERED = "acme/tampered-model"
BAD_SIGNATURE = "acme/bad-signature"
SIGSTORE = "acme/sigstore-model"
IDENTITY, ISSUER = "release@acme.example", "https://issuer.acme.example"
MODEL = "org/tiny-model"
DATASET = "org/tiny-dataset"
SIGNER = "ACME release key"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Dmz:
    root: Path
    config: Path
    public_key: Path
    bundle: Path
    key: KeyPair
    trust_config: Path
    """The Sigstore trust config (trusted root and signing config) of the test's Sigstore."""
    files: dict[str, dict[str, bytes]]
    """Repo → path → the bytes upstream serves."""


def _altered(signature: bytes) -> bytes:
    """The signature with one bit of its ECDSA signature flipped (the JSON stays well formed)."""
    document = json.loads(signature)
    envelope = document["dsseEnvelope"]["signatures"][0]
    raw = bytearray(base64.b64decode(envelope["sig"]))
    raw[-1] ^= 0x01
    envelope["sig"] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(document).encode()


def files_of(repo_id: str) -> dict[str, bytes]:
    """A small model every scanner releases, with bytes of its own (a blob is one row however
    many repos hold it, and is judged once: the repos must not share files)."""
    seed = int(hashlib.sha256(repo_id.encode()).hexdigest()[:4], 16)
    return {
        "config.json": json.dumps({"architectures": ["TinyModel"], "name": repo_id}).encode(),
        WEIGHTS: save({"weight": np.full((8, 8), seed, dtype=np.float32)}),
        "README.md": f"# {repo_id}\n".encode(),
    }


def _publish(
    hub: FakeHub, key: KeyPair, sigstore: LocalSigstore, folder: Path
) -> dict[str, dict[str, bytes]]:
    files = files_of(SIGNED)
    signed = {**files, SIGNATURE_FILE: sign_with_key(folder / "signed", files, key)}
    files = files_of(TAMPERED)
    tampered = {
        **files,
        "config.json": b'{"architectures": ["Evil"]}',
        SIGNATURE_FILE: sign_with_key(folder / "tampered", files, key),
    }
    files = files_of(BAD_SIGNATURE)
    bad = {**files, SIGNATURE_FILE: _altered(sign_with_key(folder / "bad", files, key))}
    files = files_of(SIGSTORE)
    by_ci = {**files, SIGNATURE_FILE: sigstore.sign(folder / "ci", files, IDENTITY, ISSUER)}
    published = {SIGNED: signed, TAMPERED: tampered, BAD_SIGNATURE: bad, SIGSTORE: by_ci}
    for repo_id, content in published.items():
        hub.create_repo(repo_id, files=content, lfs=[WEIGHTS])
    tiny = build_tiny_model_files()
    make_tiny_model(hub, tiny)
    make_parquet_dataset(hub)
    return {**published, MODEL: tiny}


async def _build_dmz(root: Path) -> Dmz:
    key = make_key(root / "signer")
    sigstore = LocalSigstore()
    async with FakeHub() as hub:
        files = _publish(hub, key, sigstore, root / "sign")
        (root / "a").mkdir()
        config = write_config(root / "a.toml", root / "a", upstream=f'"{hub.url}"')
        cfg = ("--config", str(config))
        for repo_id in (SIGNED, TAMPERED, BAD_SIGNATURE, SIGSTORE, MODEL):
            code, out = await arun("prefetch", repo_id, "--json", *cfg)
            assert code == 0, out
        code, out = await arun("prefetch", DATASET, "--type", "dataset", "--json", *cfg)
        assert code == 0, out
        assert (await arun("keys", "create", *cfg))[0] == 0
        _code, public = await arun("keys", "show", *cfg)
        (root / "dmz.pub").write_text(public)
        bundle = root / "bundle.tar"
        repos = [SIGNED, TAMPERED, BAD_SIGNATURE, SIGSTORE, MODEL, f"dataset:{DATASET}"]
        argv = [arg for repo in repos for arg in ("--repo", repo)]
        code, out = await arun("export", *argv, "--out", str(bundle), "--json", *cfg)
        assert code == 0, out
    trust = sigstore.trust_config(root / "sigstore-trust.json")
    return Dmz(root, config, root / "dmz.pub", bundle, key, trust, files)


@pytest.fixture(scope="module")
def dmz(tmp_path_factory: pytest.TempPathFactory) -> Dmz:
    root = tmp_path_factory.mktemp("dmz")
    return run_isolated(lambda: _build_dmz(root))


# -- instance B, offline ------------------------------------------------------------------------


@dataclass(frozen=True)
class Offline:
    data: Path
    config: Path

    @property
    def cfg(self) -> tuple[str, str]:
        return ("--config", str(self.config))


def make_offline(
    root: Path, dmz: Dmz, trusted_key: Path, trust_config: Path | None = None
) -> Offline:
    """An offline B trusting A's bundle key, `trusted_key` to sign `acme/*` and the CI identity
    to sign `acme/sigstore-*` (checked with `trust_config`), whose files must be signed."""
    data = root / "b"
    data.mkdir(parents=True)
    config = write_config(root / "b.toml", data, offline="true")
    with config.open("a") as out:
        out.write('[signing]\nrequire_signature = ["acme/*"]\n')
        if trust_config is not None:
            out.write(f'sigstore_trust_config = "{trust_config}"\n')
        out.write(
            f'[[signing.trusted]]\nname = "{SIGNER}"\nrepos = ["acme/*"]\n'
            f'public_key = "{trusted_key}"\n[[signing.trusted]]\nname = "ACME CI"\n'
            f'repos = ["acme/sigstore-*"]\nidentity = "{IDENTITY}"\nissuer = "{ISSUER}"\n'
        )
    b = Offline(data, config)
    assert run("keys", "trust", str(dmz.public_key), "--name", "dmz", *b.cfg)[0] == 0
    return b


def guarded_import(b: Offline, bundle: Path) -> tuple[int, str]:
    """`hubwarden import` with every connection refused (B opens none: it is offline)."""
    with pytest.MonkeyPatch.context() as patch:
        guard = SocketGuard(patch)
        guard.arm()
        try:
            code, out = run("import", str(bundle), "--json", *b.cfg)
        finally:
            guard.disarm()
    assert guard.violations == []
    return code, out


@dataclass(frozen=True)
class Imported:
    b: Offline
    report: dict[str, Any]


@pytest.fixture(scope="module")
def imported(dmz: Dmz, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """A B trusting the key that signed the acme repos, that imported A's bundle."""
    root = tmp_path_factory.mktemp("trusting")
    b = make_offline(root, dmz, dmz.key.public, dmz.trust_config)
    code, out = guarded_import(b, dmz.bundle)
    assert code == 0, out
    return Imported(b, json.loads(out))


def signature_of(report: dict[str, Any], repo: str) -> dict[str, Any]:
    [found] = [s for s in report["signatures"] if s["repo"] == repo]
    return dict(found)


def recorded_signatures(data: Path) -> dict[str, tuple[str, str]]:
    """repo id → (status, signer) of B's revision_signatures rows."""
    with contextlib.closing(sqlite3.connect(data / "hubwarden.db")) as db:
        rows = db.execute(
            "SELECT repos.repo_id, revision_signatures.status, revision_signatures.signer "
            "FROM revision_signatures JOIN repos ON repos.id = revision_signatures.repo_pk"
        ).fetchall()
    return {str(repo): (str(status), str(signer)) for repo, status, signer in rows}


def statuses(report: dict[str, Any], repo: str) -> dict[str, str]:
    return {f["path"]: f["status"] for f in report["files"] if f["repo"] == repo}


# -- the AI-BOM in the bundle -------------------------------------------------------------------


def valid_bom(text: str | bytes) -> dict[str, Any]:
    text = text.decode() if isinstance(text, bytes) else text
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    document: dict[str, Any] = json.loads(text)
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    return document


def file_hashes(document: dict[str, Any]) -> dict[str, str | None]:
    """path → the SHA-256 a BOM lists for it (None: none)."""
    found: dict[str, str | None] = {}
    for component in document["metadata"]["component"].get("components", []):
        props = {p["name"]: p["value"] for p in component["properties"]}
        hashes = [h["content"] for h in component.get("hashes", []) if h["alg"] == "SHA-256"]
        found[props["hubwarden:path"]] = hashes[0] if hashes else None
    return found


def test_bundle_carries_each_revisions_bom_signed_with_the_rest(dmz: Dmz) -> None:
    trusted = TrustedKey("dmz", parse_public_key(dmz.public_key.read_bytes()))
    with bundle_lib.VerifiedBundle(dmz.bundle, [trusted]) as verified:  # the signature holds
        assert verified.key_name == "dmz"
    contents = oci.read_contents(dmz.bundle)
    names = {s.name for s in contents.subjects}
    for revision in contents.revisions:
        assert revision.bom is not None, revision.label
        document = valid_bom(revision.bom)
        component = document["metadata"]["component"]
        assert (component["name"], component["version"]) == (revision.repo_id, revision.commit)
        hashes = file_hashes(document)
        assert {layer.path: layer.digest for layer in revision.layers}.items() <= hashes.items()
        assert {f"bom-manifest:{revision.label}", f"bom:{revision.label}"} <= names
    assert {r.repo_id for r in contents.revisions} == {SIGNED, TAMPERED, BAD_SIGNATURE, SIGSTORE,
                                                       MODEL, DATASET}  # fmt: skip


async def test_import_keeps_the_boms_and_bom_on_b_lists_the_verified_sha256(
    dmz: Dmz, imported: Imported, capsys: pytest.CaptureFixture[str]
) -> None:
    carried = {r.repo_id: r.bom for r in oci.read_contents(dmz.bundle).revisions}
    kept = {b["repo"]: b for b in imported.report["boms"]}
    assert set(kept) == set(carried)
    for repo_id, bom in kept.items():
        assert Path(bom["kept"]).read_bytes() == carried[repo_id]
        assert bom["sha256"] == hashlib.sha256(carried[repo_id] or b"").hexdigest()
    for repo_id, kind in ((MODEL, "model"), (SIGNED, "model"), (DATASET, "dataset")):
        code, out = await arun("bom", repo_id, "--type", kind, *imported.b.cfg)
        assert code == 0, out
        hashes = file_hashes(valid_bom(out))
        exported = file_hashes(json.loads(carried[repo_id] or b""))
        imported_files = {f["path"]: f["sha256"] for f in imported.report["files"]
                          if f["repo"] == repo_id and f["status"] == "imported"}  # fmt: skip
        assert imported_files and imported_files.items() <= hashes.items()
        assert {p: h for p, h in hashes.items() if h} == {p: h for p, h in exported.items() if h}
        for path, data in dmz.files.get(repo_id, {}).items():
            assert hashes[path] == hashlib.sha256(data).hexdigest()  # the bytes themselves
    code, out = await arun("bom", SIGNED, *imported.b.cfg)
    properties = valid_bom(out)["metadata"]["component"]["properties"]
    assert {"name": "hubwarden:signature", "value": f"verified by {SIGNER}"} in properties


def test_import_refuses_a_signed_bundle_whose_bom_contradicts_its_files(
    dmz: Dmz, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a compromised exporter could sign: a BOM giving another sha256 for a file."""
    contents = oci.read_contents(dmz.bundle)
    revision = next(r for r in contents.revisions if r.repo_id == MODEL)
    document = json.loads(revision.bom or b"")
    target = next(c for c in document["metadata"]["component"]["components"] if c.get("hashes"))
    target["hashes"][0]["content"] = "0" * 64
    store = dmz.root / "a" / "blobs"
    files = [
        oci.SourceFile(layer.path, store / layer.digest[:2] / layer.digest, layer.digest,
                       layer.size)
        for layer in revision.layers
    ]  # fmt: skip
    content = oci.RevisionContent(revision.repo_type, revision.repo_id, revision.ref,
                                  revision.commit, files, revision.state,
                                  json.dumps(document).encode())  # fmt: skip
    forged = tmp_path / "forged.tar"
    bundle_lib.export_bundle(forged, [content], KeyStore(dmz.root / "a").signing_key(),
                             created=dt.datetime.now(dt.UTC), instance="dmz")  # fmt: skip
    b = make_offline(tmp_path / "b", dmz, dmz.key.public)
    capsys.readouterr()
    code, _out = guarded_import(b, forged)
    error = capsys.readouterr().err
    assert code == 1
    assert f'gives "{target["name"]}" sha256 000000000000' in error
    assert "the bundle contradicts itself" in error
    tables, stored = snapshot(b.data)  # nothing written but the schema
    assert [name for name, rows in tables.items() if rows] == ["alembic_version"]
    assert stored == {}
    assert not (b.data / "boms").exists()


# -- model signatures, verified offline at import ------------------------------------------------


def test_import_verifies_a_key_signed_repo_offline_and_records_it(imported: Imported) -> None:
    report, b = imported.report, imported.b
    signed = signature_of(report, SIGNED)
    assert (signed["status"], signed["summary"]) == ("verified", f"verified by {SIGNER}")
    assert set(statuses(report, SIGNED).values()) == {"imported"}
    assert recorded_signatures(b.data)[SIGNED] == ("verified", SIGNER)
    code, out = run("signature", SIGNED, "--json", *b.cfg)
    assert code == 0, out
    shown = json.loads(out)
    assert (shown["status"], shown["signer"], shown["required"]) == ("verified", SIGNER, True)
    assert {f["standing"] for f in shown["files"] if f["path"] != SIGNATURE_FILE} <= {
        "covered",
        "ignored",
    }


def test_import_holds_files_of_a_tampered_signature_under_require_signature(
    imported: Imported,
) -> None:
    report, b = imported.report, imported.b
    bad = signature_of(report, BAD_SIGNATURE)
    assert (bad["status"], bad["recorded_status"]) == ("invalid", "invalid")
    files = statuses(report, BAD_SIGNATURE)
    assert files.pop(SIGNATURE_FILE) == "imported"  # the signature itself is only data
    # .gitattributes is the fake Hub's, the same blob in every repo: released with the first
    # repo's, whose signature ignores it (a blob is judged once, wherever it is found again)
    assert files.pop(".gitattributes") == "imported"
    assert files == dict.fromkeys(["config.json", WEIGHTS, "README.md"], "held")
    details = [f["detail"] for f in report["files"] if f["repo"] == BAD_SIGNATURE
               and f["path"] == "config.json"]  # fmt: skip
    assert "policy rule signature_invalid" in details[0]
    assert recorded_signatures(b.data)[BAD_SIGNATURE][0] == "invalid"
    code, out = run("signature", BAD_SIGNATURE, "--json", *b.cfg)
    assert code == 0 and json.loads(out)["status"] == "invalid"


def test_import_holds_a_file_that_differs_from_its_signed_digest(imported: Imported) -> None:
    report, b = imported.report, imported.b
    tampered = signature_of(report, TAMPERED)
    assert (tampered["status"], tampered["recorded_status"]) == ("invalid", "verified")
    assert "differs from the sha256" in tampered["summary"]
    files = statuses(report, TAMPERED)
    assert files["config.json"] == "held"
    assert {p: s for p, s in files.items() if p != "config.json"} == {
        WEIGHTS: "imported",
        "README.md": "imported",
        SIGNATURE_FILE: "imported",
        ".gitattributes": "imported",
    }
    detail = next(f["detail"] for f in report["files"]
                  if f["repo"] == TAMPERED and f["path"] == "config.json")  # fmt: skip
    assert "policy rule signature_invalid" in detail
    code, out = run("signature", TAMPERED, "--json", *b.cfg)
    assert code == 0, out
    shown = json.loads(out)
    assert shown["status"] == "invalid"
    assert "SIGNATURE_FILE_MISMATCH" in {f["code"] for f in shown["findings"]}


def test_import_records_unsigned_repos_as_the_server_does(imported: Imported) -> None:
    assert signature_of(imported.report, MODEL)["status"] == "unsigned"
    assert set(statuses(imported.report, MODEL).values()) == {"imported"}  # not required
    assert recorded_signatures(imported.b.data)[MODEL] == ("unsigned", "")


def test_import_by_a_signer_not_trusted_here_gives_untrusted_signer_and_holds(
    dmz: Dmz, tmp_path: Path
) -> None:
    other = make_key(tmp_path / "other", "someone-else")
    b = make_offline(tmp_path, dmz, other.public)
    code, out = guarded_import(b, dmz.bundle)
    assert code == 0, out
    report = json.loads(out)
    signed = signature_of(report, SIGNED)
    assert signed["status"] == "untrusted_signer"
    assert signed["signer"].startswith("key sha256:")
    files = statuses(report, SIGNED)
    assert files.pop(SIGNATURE_FILE) == "imported"
    assert set(files.values()) == {"held"}
    detail = status_detail(report, SIGNED, "config.json")
    assert "policy rule require_signature" in detail and "not trusted" in detail
    assert recorded_signatures(b.data)[SIGNED][0] == "untrusted_signer"


def status_detail(report: dict[str, Any], repo: str, path: str) -> str:
    assert status_of(report, repo, path) in ("held", "imported")
    return str(next(f["detail"] for f in report["files"]
                    if f["repo"] == repo and f["path"] == path))  # fmt: skip


def test_import_verifies_a_sigstore_signature_offline_with_the_trust_config(
    imported: Imported,
) -> None:
    """Sigstore is the one verification that could reach the network (TUF): the trust config
    keeps it offline, and the import's socket guard saw no connection attempt."""
    ci = signature_of(imported.report, SIGSTORE)
    assert (ci["status"], ci["summary"]) == ("verified", "verified by ACME CI")
    assert set(statuses(imported.report, SIGSTORE).values()) == {"imported"}
    assert recorded_signatures(imported.b.data)[SIGSTORE] == ("verified", "ACME CI")


def test_import_without_a_sigstore_trust_config_cannot_verify_and_holds(
    dmz: Dmz, tmp_path: Path
) -> None:
    b = make_offline(tmp_path, dmz, dmz.key.public)  # no sigstore_trust_config
    code, out = guarded_import(b, dmz.bundle)
    assert code == 0, out
    report = json.loads(out)
    ci = signature_of(report, SIGSTORE)
    assert ci["status"] == "unverifiable"
    assert "offline, and no [signing] sigstore_trust_config" in ci["summary"]
    files = statuses(report, SIGSTORE)
    assert files.pop(SIGNATURE_FILE) == "imported"
    assert files.pop(".gitattributes") == "imported"  # the fake Hub's, released with another repo
    assert set(files.values()) == {"held"}
    assert SIGSTORE not in recorded_signatures(b.data)  # checked again later, as online
    assert recorded_signatures(b.data)[SIGNED] == ("verified", SIGNER)
