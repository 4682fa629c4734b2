"""Real things for the bundle tests: safetensors files, revisions, bundles, and hostile tars."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from proxy.airgap import bundle, oci
from proxy.airgap.keys import SigningKey

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_safetensors(path: Path, *, rows: int = 64, seed: int = 0) -> Path:
    """A real safetensors file of two float32 tensors."""
    generator = np.random.default_rng(seed)
    tensors = {
        "embed.weight": generator.standard_normal((rows, 16)).astype(np.float32),
        "head.bias": np.zeros(16, dtype=np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def source_file(root: Path, path: str, data: bytes) -> oci.SourceFile:
    """A file of a revision, its bytes stored under `root` (as the blob store would)."""
    digest = hashlib.sha256(data).hexdigest()
    stored = root / "store" / digest
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(data)
    return oci.SourceFile(path, stored, digest, len(data))


def stored_file(path: str, stored: Path) -> oci.SourceFile:
    data = stored.read_bytes()
    return oci.SourceFile(path, stored, hashlib.sha256(data).hexdigest(), len(data))


def revision(
    files: Sequence[oci.SourceFile],
    *,
    repo_id: str = "org/model",
    ref: str = "main",
    repo_type: str = "model",
    commit: str = COMMIT,
    state: dict[str, Any] | None = None,
) -> oci.RevisionContent:
    return oci.RevisionContent(
        repo_type,
        repo_id,
        ref,
        commit,
        list(files),
        state if state is not None else {"refs": {ref: commit}, "pins": []},
    )


def model_revision(root: Path, **kwargs: Any) -> oci.RevisionContent:
    """A small model revision: a real safetensors file, config.json, README.md."""
    weights = make_safetensors(root / "src" / "model.safetensors")
    files = [
        stored_file("model.safetensors", weights),
        source_file(root, "config.json", b'{"architectures": ["TinyModel"]}'),
        source_file(root, "README.md", b"# tiny\n"),
    ]
    return revision(files, **kwargs)


def export(
    out: Path,
    revisions: Sequence[oci.RevisionContent],
    key: SigningKey,
    **kwargs: Any,
) -> bundle.ExportResult:
    return bundle.export_bundle(out, revisions, key, created=CREATED, instance="dmz", **kwargs)


# -- reshaping bundles, as an attacker (or a damaged medium) would --------------------------


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def put_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return digest


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def forge_model_manifest(layout: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the first model manifest of a directory bundle with `change`, and everything that
    points at it (state and BOM subjects, index.json), so the bundle is consistent but for its
    signature."""
    index_path = layout / "index.json"
    index = read_json(index_path)
    entries = index["manifests"]
    model = next(e for e in entries if e["artifactType"] == oci.MODEL_ARTIFACT_TYPE)
    old = model["digest"]
    manifest = read_json(layout / "blobs" / "sha256" / old.removeprefix("sha256:"))
    change(manifest)
    data = dumps(manifest)
    model["digest"], model["size"] = f"sha256:{put_blob(layout, data)}", len(data)
    for entry in entries:
        if entry["artifactType"] not in (oci.STATE_MEDIA_TYPE, oci.BOM_MEDIA_TYPE):
            continue
        path = layout / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")
        state_manifest = read_json(path)
        if state_manifest["subject"]["digest"] == old:
            state_manifest["subject"].update(digest=model["digest"], size=model["size"])
            state_data = dumps(state_manifest)
            entry["digest"] = f"sha256:{put_blob(layout, state_data)}"
            entry["size"] = len(state_data)
    index_path.write_bytes(dumps(index))


def tar_of_layout(layout: Path, out: Path) -> Path:
    """A tar of a directory layout in the bundle order: the top files, the manifests index.json
    lists, the blobs they reference, the files last (blobs nobody references are left out)."""
    index = read_json(layout / "index.json")
    manifests = [m["digest"][7:] for m in index["manifests"]]
    small: list[str] = []
    files: list[str] = []
    for digest in manifests:
        manifest = read_json(layout / "blobs" / "sha256" / digest)
        small.append(manifest["config"]["digest"][7:])
        is_model = manifest["artifactType"] == oci.MODEL_ARTIFACT_TYPE
        (files if is_model else small).extend(layer["digest"][7:] for layer in manifest["layers"])
    blobs = list(dict.fromkeys([*manifests, *small, *files]))
    names = ["oci-layout", "index.json", *(f"blobs/sha256/{d}" for d in blobs)]
    return write_tar(out, [(name, (layout / name).read_bytes()) for name in names])


Member = tuple[str, bytes] | tarfile.TarInfo


def write_tar(out: Path, members: Sequence[Member]) -> Path:
    """A tar of `members`: (name, content) regular files, or TarInfo for anything else."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def members_of(path: Path) -> list[tuple[str, bytes]]:
    """The regular members of a tar, read with the standard library."""
    with tarfile.open(path) as tar:
        result = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            assert handle is not None
            result.append((info.name, handle.read()))
        return result


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info
