"""Issue 8 items 4 and 5: `hubwarden export` on a DMZ mirror, `hubwarden import` on an offline
one, end to end with real parts: the fake Hub, the `hubwarden` command in-process, the real
scanners in worker processes, and the real clients against the offline instance.

Instance A (online, the DMZ) prefetches a tiny model (branch, tag, several commits), a model
holding a malicious pickle (held there, so not exported) and a parquet dataset, then exports
them; later the model gets a new commit with a new file, and A exports again `--since` the first
bundle. Instance B (`offline = true`, its own data directory) trusts A's key and imports, under
the socket guard (tests/e2e/test_offline.py) for the whole B part: nothing on B may open a
connection but the clients' to B itself.

A is built once per module (`dmz`, in a thread of its own with its own fake Hub); each test
builds its B in a fresh data directory, or copies `imported`, a B that imported the first
bundle. Refusals compare B's database (every table, dumped) and its store (every file, hashed)
before and after.

The pin contradiction tested: B holds a pin of `model.safetensors` at commit P (taken from the
first bundle); a bundle, signed by the trusted key, says that same commit P holds other bytes
for it (what a compromised exporter would say). Refused like a replaced file: tampering at the
pinned commit. A newer commit changing the pinned file is not a contradiction but a pinned
change (`pinned_change`, default hold: imported, the branch keeps serving its approved commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub as hf
import numpy as np
import pytest
from huggingface_hub import HfApi, HfFileSystem
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from proxy.airgap import bundle as bundle_lib
from proxy.airgap import oci
from proxy.airgap.keys import KeyStore
from proxy.cli import main
from tests.airgap.factories import forge_model_manifest
from tests.dbplugin import run_isolated
from tests.e2e import test_offline
from tests.e2e.test_offline import (
    MALICIOUS_PICKLE,
    NEW_CONFIG,
    SocketGuard,
    _load_rows,
    _point_datasets_at,
)
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import build_tiny_model_files, make_parquet_dataset, make_tiny_model
from tests.proxyplugin import start_proxy

socket_guard = test_offline.socket_guard  # the fixture, shared
MODEL = "org/tiny-model"
EVIL = "org/evil-model"
DATASET = "org/tiny-dataset"
WEIGHTS = "model.safetensors"
NEW_FILE = "adapter.safetensors"
NEW_WEIGHTS = save({"adapter": np.arange(32, dtype=np.float32)})


# -- instance A, the DMZ ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dmz:
    """What A made: its settings file, public key, the two bundles and the upstream commits."""

    root: Path
    config: Path
    public_key: Path
    bundle: Path
    incremental: Path
    export_report: dict[str, Any]
    incremental_report: dict[str, Any]
    files: dict[str, bytes]
    v1: str
    extra: str
    main: str
    main_after: str
    history: list[str]
    evil_head: str


def write_config(path: Path, data_dir: Path, **settings: str) -> Path:
    lines = [f'data_dir = "{data_dir}"', *(f"{k} = {v}" for k, v in settings.items())]
    lines += ["[fetch]", "retries = 1", "metadata_ttl_s = 0", "[scan]", "workers = 2"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*argv: str) -> tuple[int, str]:
    """`hubwarden ARGV` in-process; its exit status and what it wrote on stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


async def arun(*argv: str) -> tuple[int, str]:
    return await asyncio.to_thread(run, *argv)


async def _build_dmz(root: Path) -> Dmz:
    files = build_tiny_model_files()
    async with FakeHub() as hub:
        repo = make_tiny_model(hub, files)
        v1 = repo.tag("v1")
        extra = repo.commit({"extra.txt": b"extra\n"}, message="Add extra")
        repo.commit({"notes.md": b"one\n"}, message="Notes")
        main_sha = repo.commit({"config.json": NEW_CONFIG}, message="Bump config")
        evil = hub.create_repo(
            EVIL,
            files={
                "config.json": b'{"model_type": "bert"}',
                WEIGHTS: _weights(7),
                "pytorch_model.bin": MALICIOUS_PICKLE,
            },
        )
        make_parquet_dataset(hub)
        config = write_config(root / "a.toml", root / "a", upstream=f'"{hub.url}"')
        (root / "a").mkdir()
        cfg = ("--config", str(config))
        for argv in ([MODEL], [f"{MODEL}@v1"], [DATASET, "--type", "dataset"]):
            code, out = await arun("prefetch", *argv, "--json", *cfg)
            assert code == 0, out
        code, out = await arun("prefetch", EVIL, "--json", *cfg)
        assert code == 1  # the pickle is held
        code, _out = await arun("keys", "create", *cfg)
        assert code == 0
        code, public = await arun("keys", "show", *cfg)
        (root / "dmz.pub").write_text(public)
        bundle = root / "bundle.tar"
        code, out = await arun(
            "export",
            "--repo",
            MODEL,
            "--repo",
            f"{MODEL}@v1",
            "--repo",
            EVIL,
            "--repo",
            f"dataset:{DATASET}",
            "--out",
            str(bundle),
            "--json",
            *cfg,
        )
        assert code == 0, out
        report = json.loads(out)
        # Upstream moves on: a new commit on main with a new file; A fetches it and exports
        # what the first bundle did not carry.
        after = repo.commit({NEW_FILE: NEW_WEIGHTS}, message="Add an adapter")
        code, out = await arun("prefetch", MODEL, "--json", *cfg)
        assert code == 0, out
        incremental = root / "incremental.tar"
        code, out = await arun(
            "export",
            "--repo",
            MODEL,
            "--since",
            str(bundle),
            "--out",
            str(incremental),
            "--json",
            *cfg,
        )
        assert code == 0, out
        return Dmz(
            root,
            config,
            root / "dmz.pub",
            bundle,
            incremental,
            report,
            json.loads(out),
            files,
            v1,
            extra,
            main_sha,
            after,
            [c.sha for c in repo.history(main_sha)],
            evil.head(),
        )


def _weights(seed: int, count: int = 4) -> bytes:
    return save({"w": np.full(count, seed, dtype=np.float32)})


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


def make_offline(root: Path, dmz: Dmz, *, trust: bool = True, **settings: str) -> Offline:
    data = root / "b"
    data.mkdir(parents=True)
    b = Offline(data, write_config(root / "b.toml", data, offline="true", **settings))
    if trust:
        code, _out = run("keys", "trust", str(dmz.public_key), "--name", "dmz", *b.cfg)
        assert code == 0
    return b


def copy_offline(template: Offline, root: Path, **settings: str) -> Offline:
    data = root / "b"
    shutil.copytree(template.data, data)
    return Offline(data, write_config(root / "b.toml", data, offline="true", **settings))


async def import_json(b: Offline, bundle: Path, *extra: str) -> dict[str, Any]:
    code, out = await arun("import", str(bundle), "--json", *extra, *b.cfg)
    assert code == 0, out
    report: dict[str, Any] = json.loads(out)
    return report


@contextlib.asynccontextmanager
async def serving(b: Offline, guard: SocketGuard, cache: Path) -> Any:
    from proxy.config import load_settings

    settings = load_settings(b.config, {}, {"tree_page_size": 4})
    running, runner = await start_proxy(settings, cache)
    guard.allow(running.url)
    try:
        with pytest.MonkeyPatch.context() as patch:
            # As HF_ENDPOINT does (read at import): the clients' own calls that take no
            # endpoint argument (the agent-harness registry) go to B too, never to the Hub.
            patch.setattr("huggingface_hub.constants.ENDPOINT", running.url)
            patch.setattr(
                "huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
                running.url + "/{repo_id}/resolve/{revision}/{filename}",
            )
            yield running
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def imported(dmz: Dmz, tmp_path_factory: pytest.TempPathFactory) -> Offline:
    """A B that imported the first bundle (under an armed socket guard)."""
    root = tmp_path_factory.mktemp("imported")
    with pytest.MonkeyPatch.context() as patch:
        guard = SocketGuard(patch)
        guard.arm()
        b = make_offline(root, dmz)
        code, out = run("import", str(dmz.bundle), "--json", *b.cfg)
        guard.disarm()
    assert code == 0, out
    assert guard.violations == []
    return b


def status_of(report: dict[str, Any], repo: str, path: str, ref: str = "main") -> str:
    found = [
        f["status"]
        for f in report["files"]
        if f["repo"] == repo and f["path"] == path and f["ref"] == ref
    ]
    assert len(found) == 1, (repo, path, ref)
    return str(found[0])


def snapshot(data: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Every table's rows and every stored file's hash, to compare before and after."""
    with contextlib.closing(sqlite3.connect(data / "hubwarden.db")) as db:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        tables = {
            name: sorted(repr(row) for row in db.execute(f'SELECT * FROM "{name}"'))  # noqa: S608 - names from sqlite_master
            for name in names
        }
    files = {
        str(path.relative_to(data)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in ("blobs", "quarantine", "tmp")
        for path in sorted((data / folder).rglob("*"))
        if path.is_file()
    }
    return tables, files


# -- B serves what it imported ------------------------------------------------------------------


async def test_import_serves_the_repos_to_unchanged_clients_offline(
    dmz: Dmz, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    socket_guard.arm()
    b = make_offline(tmp_path, dmz)
    report = await import_json(b, dmz.bundle)
    async with serving(b, socket_guard, tmp_path / "cache") as running:
        by_branch = await running.download(MODEL, "config.json")
        by_tag = await running.download(MODEL, "config.json", revision="v1")
        by_commit = await running.download(MODEL, "extra.txt", revision=dmz.main)
        snap = Path(
            await running.call(
                hf.snapshot_download,
                MODEL,
                endpoint=running.url,
                cache_dir=tmp_path / "snap",
                token=False,
            )
        )
        api = HfApi(endpoint=running.url, token=False)
        refs = await running.call(api.list_repo_refs, MODEL)
        commits = await running.call(api.list_repo_commits, MODEL)
        fs = HfFileSystem(endpoint=running.url, token=False, skip_instance_cache=True)
        listed = await running.call(fs.ls, MODEL, detail=False)
        head = await running.call(lambda: fs.open(f"{MODEL}/{WEIGHTS}", "rb").read(16))
    assert report["changed"] is True
    assert status_of(report, MODEL, WEIGHTS) == "imported"
    assert status_of(report, EVIL, "pytorch_model.bin") == "withheld"
    assert by_branch.read_bytes() == NEW_CONFIG
    assert by_tag.read_bytes() == dmz.files["config.json"]
    assert by_commit.read_bytes() == b"extra\n"
    assert snap.name == dmz.main
    assert (snap / WEIGHTS).read_bytes() == dmz.files[WEIGHTS]
    assert [(r.name, r.target_commit) for r in refs.branches] == [("main", dmz.main)]
    assert [(r.name, r.target_commit) for r in refs.tags] == [("v1", dmz.v1)]
    assert [c.commit_id for c in commits] == dmz.history
    assert f"{MODEL}/{WEIGHTS}" in listed
    assert head == dmz.files[WEIGHTS][:16]


async def test_import_held_file_is_absent_with_the_exporters_reason(
    dmz: Dmz, imported: Offline, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    socket_guard.arm()
    b = copy_offline(imported, tmp_path)
    async with serving(b, socket_guard, tmp_path / "cache") as running:
        config = await running.download(EVIL, "config.json")
        url = f"{running.url}/{EVIL}/resolve/main/pytorch_model.bin"
        head = await running.call(hf.get_hf_file_metadata, url, token=False)
        with pytest.raises(HfHubHTTPError) as refused:
            await running.download(EVIL, "pytorch_model.bin")
    carried = oci.read_contents(dmz.bundle).files
    assert hashlib.sha256(MALICIOUS_PICKLE).hexdigest() not in carried
    evil = next(r for r in dmz.export_report["revisions"] if r["repo"] == EVIL)
    assert [o["path"] for o in evil["left_out"]] == ["pytorch_model.bin"]
    assert "held" in evil["left_out"][0]["why"]
    assert config.read_bytes() == b'{"model_type": "bert"}'
    assert head.commit_hash == dmz.evil_head  # HEAD answers from metadata (§6.3)
    message = refused.value.server_message or ""
    assert refused.value.response.status_code == 403
    assert (
        "held in quarantine: pytorch_model.bin (withheld by the exporting mirror (dmz)" in message
    )
    assert "os.system" in message  # the exporter's reason


async def test_import_dataset_loads_with_datasets_offline(
    imported: Offline, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    socket_guard.arm()
    b = copy_offline(imported, tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        async with serving(b, socket_guard, tmp_path / "cache") as running:
            _point_datasets_at(patch, running)
            rows = await _load_rows(running, tmp_path / "datasets")
    assert rows == ["hello world", "the quick brown fox", "jumps over", "the lazy dog"]


async def test_import_same_bundle_twice_changes_nothing(
    dmz: Dmz, imported: Offline, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    socket_guard.arm()
    b = copy_offline(imported, tmp_path)
    before = snapshot(b.data)
    report = await import_json(b, dmz.bundle)
    assert snapshot(b.data) == before
    assert report["changed"] is False
    assert {f["status"] for f in report["files"]} == {"already present", "withheld"}
    assert {r["status"] for r in report["refs"]} == {"unchanged"}


async def test_incremental_bundle_carries_only_the_new_files_and_imports(
    dmz: Dmz, imported: Offline, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    contents = oci.read_contents(dmz.incremental)
    with bundle_lib.VerifiedBundle(dmz.incremental, [_dmz_trusted(dmz)]) as verified:
        carried = set(verified.files) - verified.omitted
    socket_guard.arm()
    b = copy_offline(imported, tmp_path)
    report = await import_json(b, dmz.incremental)
    async with serving(b, socket_guard, tmp_path / "cache") as running:
        adapter = await running.download(MODEL, NEW_FILE)
        weights = await running.download(MODEL, WEIGHTS, revision=dmz.main_after)
    assert carried == {hashlib.sha256(NEW_WEIGHTS).hexdigest()}
    assert len(contents.files) > len(carried)  # the rest is referenced, left out
    assert dmz.incremental_report["files_written"] == 1
    assert status_of(report, MODEL, NEW_FILE) == "imported"
    assert status_of(report, MODEL, WEIGHTS) == "already present"
    assert [(r["ref"], r["status"], r["commit"]) for r in report["refs"]] == [
        ("main", "moved", dmz.main_after)
    ]
    assert adapter.read_bytes() == NEW_WEIGHTS
    assert weights.read_bytes() == dmz.files[WEIGHTS]


def _dmz_trusted(dmz: Dmz) -> Any:
    from proxy.airgap.keys import TrustedKey, parse_public_key

    return TrustedKey("dmz", parse_public_key(dmz.public_key.read_bytes()))


# -- refusals change nothing --------------------------------------------------------------------


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def _flipped_byte(dmz: Dmz, out: Path) -> Path:
    data = bytearray(dmz.bundle.read_bytes())
    biggest = max(_members(dmz.bundle), key=lambda m: m.size)
    data[biggest.offset_data + biggest.size // 2] ^= 0x01
    out.write_bytes(data)
    return out


def _truncated(dmz: Dmz, out: Path) -> Path:
    last = _members(dmz.bundle)[-1]
    out.write_bytes(dmz.bundle.read_bytes()[: last.offset_data + last.size // 2])
    return out


def _layout(dmz: Dmz, out: Path) -> Path:
    with tarfile.open(dmz.bundle) as tar:
        tar.extractall(out, filter="data")
    return out


def _forged_manifest(dmz: Dmz, out: Path) -> Path:
    layout = _layout(dmz, out)

    def change(manifest: dict[str, Any]) -> None:
        manifest["annotations"][oci.COMMIT_ANNOTATION] = "f" * 40

    forge_model_manifest(layout, change)
    return layout


def _untrusted(dmz: Dmz, out: Path) -> Path:
    other = KeyStore(out.parent / "other")
    other.create()
    contents = oci.read_contents(dmz.bundle)
    revision = contents.revisions[0]
    store = dmz.root / "a" / "blobs"
    files = [
        oci.SourceFile(
            layer.path, store / layer.digest[:2] / layer.digest, layer.digest, layer.size
        )
        for layer in revision.layers
    ]
    content = oci.RevisionContent(
        revision.repo_type, revision.repo_id, revision.ref, revision.commit, files, revision.state
    )
    bundle_lib.export_bundle(
        out, [content], other.signing_key(), created=dt.datetime.now(dt.UTC), instance="elsewhere"
    )
    return out


def _with_member(dmz: Dmz, out: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """The bundle's two top files, then `member` where the first blob belongs."""
    with tarfile.open(dmz.bundle) as tar:
        top = [(m, tar.extractfile(m)) for m in tar.getmembers()[:2]]
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as forged:
            for info, stream in top:
                forged.addfile(info, stream)
            forged.addfile(member, io.BytesIO(data) if data else None)
    return out


def _traversal(dmz: Dmz, out: Path) -> Path:
    member = tarfile.TarInfo("blobs/sha256/../../../escape")
    member.size = 4
    return _with_member(dmz, out, member, b"evil")


def _symlink(dmz: Dmz, out: Path) -> Path:
    member = tarfile.TarInfo("blobs/sha256/" + "a" * 64)
    member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return _with_member(dmz, out, member)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_flipped_byte, "does not hash to its digest"),
        (_truncated, "truncated"),
        (_forged_manifest, "signature"),
        (_untrusted, "trusted"),
        (_traversal, "path traversal"),
        (_symlink, "symbolic link"),
    ],
    ids=[
        "flipped-byte",
        "truncated-tail",
        "forged-manifest",
        "untrusted-key",
        "path-traversal",
        "symlink-member",
    ],
)
async def test_import_refused_bundle_changes_nothing(
    dmz: Dmz,
    imported: Offline,
    tmp_path: Path,
    socket_guard: SocketGuard,
    capsys: pytest.CaptureFixture[str],
    damage: Any,
    says: str,
) -> None:
    bad = damage(dmz, tmp_path / "bad.tar")
    socket_guard.arm()
    b = copy_offline(imported, tmp_path)
    before = snapshot(b.data)
    capsys.readouterr()
    code, _out = await arun("import", str(bad), *b.cfg)
    error = capsys.readouterr().err
    assert code == 1
    assert says in error
    assert snapshot(b.data) == before


async def test_import_refused_midway_leaves_no_staged_file(
    dmz: Dmz, tmp_path: Path, socket_guard: SocketGuard, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last file is damaged: every file before it was staged, and is gone again."""
    data = bytearray(dmz.bundle.read_bytes())
    last = _members(dmz.bundle)[-1]
    data[last.offset_data] ^= 0x01
    (bad := tmp_path / "bad.tar").write_bytes(data)
    socket_guard.arm()
    b = make_offline(tmp_path, dmz)
    assert (await arun("db", "upgrade", *b.cfg))[0] == 0
    (b.data / "tmp").mkdir()
    before = snapshot(b.data)
    code, _out = await arun("import", str(bad), *b.cfg)
    assert code == 1
    assert "does not hash to its digest" in capsys.readouterr().err
    assert snapshot(b.data) == before
    assert before[0]["repos"] == [] and before[1] == {}


# -- what the bundle says against what B holds --------------------------------------------------

NEW_COMMIT = "c0ffee" + "0" * 34
OTHER_WEIGHTS = save({"w": np.full(4, 99, dtype=np.float32)})


def craft(
    dmz: Dmz,
    out: Path,
    *,
    commit: str,
    history: list[str],
    replace: dict[str, bytes] | None = None,
    pins: dict[str, tuple[str, str]] | None = None,
) -> Path:
    """A bundle of the model's main at `commit`, signed by the DMZ's own key: what a
    compromised exporter (or one that mirrored a rewritten upstream) would send."""
    revision = next(
        r for r in oci.read_contents(dmz.bundle).revisions if r.repo_id == MODEL and r.ref == "main"
    )
    state = json.loads(json.dumps(revision.state))
    template = state["commits"][state["commit"]]
    state["commit"] = state["ref"]["head"] = state["info"]["sha"] = commit
    state["history"] = history
    state["commits"] = {
        sha: state["commits"].get(sha) or {**template, "id": sha, "title": "Crafted"}
        for sha in history
    }
    store = dmz.root / "a" / "blobs"
    files = {
        layer.path: oci.SourceFile(
            layer.path, store / layer.digest[:2] / layer.digest, layer.digest, layer.size
        )
        for layer in revision.layers
    }
    for path, data in (replace or {}).items():
        digest = hashlib.sha256(data).hexdigest()
        (source := out.parent / f"replaced-{digest}").write_bytes(data)
        files[path] = oci.SourceFile(path, source, digest, len(data))
        entry = next(e for e in state["tree"] if e["path"] == path)
        assert "lfs" in entry
        entry["size"] = len(data)
        entry["lfs"].update(oid=digest, size=len(data))
        next(f for f in state["files"] if f["path"] == path).update(
            sha256=digest, etag=digest, size=len(data)
        )
    for path, (etag, at) in (pins or {}).items():
        next(p for p in state["pins"] if p["path"] == path).update(etag=etag, commit=at)
    content = oci.RevisionContent("model", MODEL, "main", commit, list(files.values()), state)
    bundle_lib.export_bundle(
        out,
        [content],
        KeyStore(dmz.root / "a").signing_key(),
        created=dt.datetime.now(dt.UTC),
        instance="dmz",
    )
    return out


def pin_of(b: Offline, path: str) -> tuple[str, str]:
    with contextlib.closing(sqlite3.connect(b.data / "hubwarden.db")) as db:
        row = db.execute('SELECT etag, "commit" FROM pins WHERE path = ?', (path,)).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


OTHER = hashlib.sha256(OTHER_WEIGHTS).hexdigest()


@pytest.mark.parametrize(
    ("crafted", "says"),
    [
        (
            {"commit": "main", "history": "main", "replace": {WEIGHTS: OTHER_WEIGHTS}},
            "the same commit with other content",
        ),
        (
            {"commit": NEW_COMMIT, "history": "after-main", "pins": {WEIGHTS: (OTHER, "main")}},
            "pinned file replaced",
        ),
        ({"commit": NEW_COMMIT, "history": "root"}, "history rewritten"),
    ],
    ids=["pinned-commit-other-bytes", "pin-at-pinned-commit-other-hash", "history-rewritten"],
)
async def test_import_contradicting_this_mirror_is_refused_and_changes_nothing(
    dmz: Dmz,
    imported: Offline,
    tmp_path: Path,
    socket_guard: SocketGuard,
    capsys: pytest.CaptureFixture[str],
    crafted: dict[str, Any],
    says: str,
) -> None:
    histories = {
        "main": dmz.history,
        "after-main": [NEW_COMMIT, *dmz.history],
        "root": [NEW_COMMIT],
    }
    options = {
        **crafted,
        "commit": dmz.main if crafted["commit"] == "main" else crafted["commit"],
        "history": histories[crafted["history"]],
    }
    if "pins" in options:
        options["pins"] = {p: (e, dmz.main) for p, (e, _at) in options["pins"].items()}
    bad = craft(dmz, tmp_path / "crafted.tar", **options)
    socket_guard.arm()
    b = copy_offline(imported, tmp_path)
    assert pin_of(b, WEIGHTS) == (hashlib.sha256(dmz.files[WEIGHTS]).hexdigest(), dmz.main)
    before = snapshot(b.data)
    capsys.readouterr()
    code, _out = await arun("import", str(bad), *b.cfg)
    error = capsys.readouterr().err
    assert code == 1
    assert says in error and "nothing was imported" in error
    assert snapshot(b.data) == before


async def test_import_pinned_change_waits_and_the_branch_keeps_its_approved_commit(
    dmz: Dmz, imported: Offline, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    bundle = craft(
        dmz,
        tmp_path / "changed.tar",
        commit=NEW_COMMIT,
        history=[NEW_COMMIT, *dmz.history],
        replace={WEIGHTS: OTHER_WEIGHTS},
    )
    socket_guard.arm()
    b = copy_offline(imported, tmp_path)
    report = await import_json(b, bundle)
    async with serving(b, socket_guard, tmp_path / "cache") as running:
        by_branch = await running.download(MODEL, WEIGHTS)
        with pytest.raises(HfHubHTTPError, match="awaits review"):
            await running.download(MODEL, WEIGHTS, revision=NEW_COMMIT)
    (ref,) = report["refs"]
    assert (ref["status"], ref["commit"]) == ("held", dmz.main)
    assert status_of(report, MODEL, WEIGHTS) == "imported"  # its bytes are here, for review
    assert by_branch.read_bytes() == dmz.files[WEIGHTS]
    assert pin_of(b, WEIGHTS)[1] == dmz.main


async def test_import_pinned_change_under_block_policy_is_refused(
    dmz: Dmz,
    imported: Offline,
    tmp_path: Path,
    socket_guard: SocketGuard,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = craft(
        dmz,
        tmp_path / "changed.tar",
        commit=NEW_COMMIT,
        history=[NEW_COMMIT, *dmz.history],
        replace={WEIGHTS: OTHER_WEIGHTS},
    )
    monkeypatch.setenv("HUBWARDEN_POLICY_PINNED_CHANGE", "block")
    socket_guard.arm()
    b = copy_offline(imported, tmp_path)
    before = snapshot(b.data)
    code, _out = await arun("import", str(bundle), *b.cfg)
    assert code == 1
    assert 'changes pinned file "model.safetensors"' in capsys.readouterr().err
    assert snapshot(b.data) == before


# -- the exporter's side ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("org/never-fetched", "org/never-fetched was never mirrored here; prefetch it first"),
        (f"{MODEL}@v9", 'revision "v9" of org/tiny-model was never resolved here'),
        ("dataset:org/tiny-model", "datasets/org/tiny-model was never mirrored here"),
    ],
    ids=["repo", "revision", "type"],
)
async def test_export_of_what_was_never_mirrored_is_refused_clearly(
    dmz: Dmz, tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, says: str
) -> None:
    out = tmp_path / "never.tar"
    capsys.readouterr()
    code, _out = await arun(
        "export", "--repo", spec, "--out", str(out), "--config", str(dmz.config)
    )
    assert code == 1
    assert says in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


async def test_import_trusting_the_exporters_scans_still_applies_the_local_policy(
    dmz: Dmz, tmp_path: Path, socket_guard: SocketGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBWARDEN_POLICY_ALLOWED_FORMATS", "gguf")
    socket_guard.arm()
    b = make_offline(tmp_path, dmz)
    report = await import_json(b, dmz.bundle, "--trust-scans")
    with contextlib.closing(sqlite3.connect(b.data / "hubwarden.db")) as db:
        actions = {row[0]: row[1] for row in db.execute("SELECT action, actor FROM audit_events")}
    detail = next(
        f["detail"] for f in report["files"] if (f["repo"], f["path"]) == (MODEL, WEIGHTS)
    )
    assert status_of(report, MODEL, WEIGHTS) == "held"  # safetensors is not an allowed format
    assert detail.startswith("rejected: policy rule allowed_formats")
    assert status_of(report, MODEL, "config.json") == "imported"
    assert actions["bundle.imported"].startswith("os:")


async def test_incremental_bundle_without_its_predecessor_is_refused(
    dmz: Dmz, tmp_path: Path, socket_guard: SocketGuard, capsys: pytest.CaptureFixture[str]
) -> None:
    socket_guard.arm()
    b = make_offline(tmp_path, dmz)
    assert (await arun("db", "upgrade", *b.cfg))[0] == 0
    before = snapshot(b.data)
    code, _out = await arun("import", str(dmz.incremental), *b.cfg)
    assert code == 1
    assert "import that bundle first" in capsys.readouterr().err
    assert snapshot(b.data) == before


@pytest.mark.parametrize("layout", ["split", "dir"])
async def test_split_and_directory_bundles_import_and_a_crashed_imports_leftovers_go(
    dmz: Dmz, tmp_path: Path, socket_guard: SocketGuard, layout: str
) -> None:
    out = tmp_path / "media" / "bundle.tar"
    out.parent.mkdir()
    extra = ["--split", "1M"] if layout == "split" else ["--dir"]
    code, printed = await arun(
        "export",
        "--repo",
        f"dataset:{DATASET}",
        "--out",
        str(out),
        *extra,
        "--json",
        "--config",
        str(dmz.config),
    )
    assert code == 0, printed
    written = [Path(p) for p in json.loads(printed)["bundle"]]
    socket_guard.arm()
    b = make_offline(tmp_path, dmz)
    (b.data / "tmp").mkdir()
    process = await asyncio.create_subprocess_exec("true")
    await process.wait()  # a pid no longer alive, as a killed import's
    leftover = b.data / "tmp" / f"{process.pid}-{'0' * 32}.part"
    leftover.write_bytes(b"half a file")
    report = await import_json(b, written[0])
    assert written == ([out.with_name("bundle.tar.000")] if layout == "split" else [out])
    assert status_of(report, DATASET, "data/train-00000-of-00001.parquet") == "imported"
    assert not leftover.exists()


def test_export_is_audited_with_what_it_left_out(dmz: Dmz) -> None:
    with contextlib.closing(sqlite3.connect(dmz.root / "a" / "hubwarden.db")) as db:
        rows = db.execute(
            "SELECT actor, details FROM audit_events WHERE action = 'bundle.exported'"
        ).fetchall()
    details = [json.loads(row[1]) for row in rows]
    assert len(rows) >= 5  # four revisions, then the incremental one
    assert {row[0] for row in rows} == {f"os:{getpass.getuser()}"}
    evil = next(d for d in details if d["left_out"])
    assert evil["left_out"][0].startswith("pytorch_model.bin: held (rejected)")


async def test_import_rule_in_audit_mode_is_recorded_not_enforced(
    dmz: Dmz, tmp_path: Path, socket_guard: SocketGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBWARDEN_POLICY_ALLOWED_FORMATS", "gguf")
    monkeypatch.setenv("HUBWARDEN_POLICY_AUDIT_RULES", "allowed_formats")
    socket_guard.arm()
    b = make_offline(tmp_path, dmz)
    report = await import_json(b, dmz.bundle)
    with contextlib.closing(sqlite3.connect(b.data / "hubwarden.db")) as db:
        audited = [
            json.loads(row[0])
            for row in db.execute(
                "SELECT details FROM audit_events WHERE action = 'policy.audited'"
            )
        ]
    assert status_of(report, MODEL, WEIGHTS) == "imported"
    assert {(d["rule"], d["path"]) for d in audited} >= {("allowed_formats", WEIGHTS)}
