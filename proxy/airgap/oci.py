"""A bundle as an OCI image layout: planned, written (a directory or one tar stream), read back.

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 every manifest below (model, state, signature)
    blobs/sha256/<hex>         manifests, configs, state, the signature, the files

Per repo revision, one CNCF ModelPack manifest (artifactType
`application/vnd.cncf.model.manifest.v1+json`, config `application/vnd.cncf.model.config.v1+json`)
whose layers are the revision's files, uncompressed (`…model.<kind>.v1.raw`), so a layer's digest
is the file's sha256; each layer names its file in `org.cncf.model.filepath` (and
`org.opencontainers.image.title`, which `oras pull` writes the file as). Hubwarden's state of the
revision is a referrer artifact (`application/vnd.hubwarden.state.v1+json`) whose `subject` is
that manifest; so is the revision's AI-BOM (`application/vnd.cyclonedx+json`, a CycloneDX
document), when the export made one (at most one per revision; bundles of earlier versions have
none). The signature is one artifact (`application/vnd.dev.sigstore.bundle.v0.3+json`) without a
subject, since it covers every manifest, state and BOM blob of the bundle at once.

A tar holds `oci-layout`, `index.json`, the manifests, then the configs, state, BOM and signature
blobs, and the files last: an importer has every manifest and the signature (and can check it)
before the first byte of a file arrives. A file blob that a previous bundle carried (`since`) is
left out; its manifest still references it.

Reading is for hostile input: every name, size, count and depth is bounded (`Limits`); members
must be the two top files or `blobs/sha256/<hex>` (no traversal, absolute names, links, devices,
duplicates, or members nobody referenced), each in an order where something before it referenced
it; every blob's size and sha256 are checked as it streams. Every refusal is a BundleError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from proxy.airgap import tarstream
from proxy.airgap.errors import BundleError
from proxy.airgap.jsonsafe import JsonLimits, JsonRefused, load_json
from proxy.airgap.signing import BUNDLE_MEDIA_TYPE as SIGNATURE_MEDIA_TYPE
from proxy.airgap.signing import Subject
from proxy.errors import InvalidInput, shown
from proxy.repos import RepoPath, RepoRef, RepoType, Revision, is_commit_sha

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs/sha256"
LAYOUT_VERSION = "1.0.0"

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
MODEL_ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.weight.config.v1.raw"
DOC_MEDIA_TYPE = "application/vnd.cncf.model.doc.v1.raw"
CODE_MEDIA_TYPE = "application/vnd.cncf.model.code.v1.raw"
DATASET_MEDIA_TYPE = "application/vnd.cncf.model.dataset.v1.raw"
LAYER_MEDIA_TYPES = frozenset(
    {
        WEIGHT_MEDIA_TYPE,
        WEIGHT_CONFIG_MEDIA_TYPE,
        DOC_MEDIA_TYPE,
        CODE_MEDIA_TYPE,
        DATASET_MEDIA_TYPE,
    }
)
STATE_MEDIA_TYPE = "application/vnd.hubwarden.state.v1+json"
BOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"

FILEPATH_ANNOTATION = "org.cncf.model.filepath"
UNTESTED_ANNOTATION = "org.cncf.model.file.mediatype.untested"
TITLE_ANNOTATION = "org.opencontainers.image.title"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
COMMIT_ANNOTATION = "org.opencontainers.image.revision"
REPO_TYPE_ANNOTATION = "dev.hubwarden.repo.type"
REPO_ID_ANNOTATION = "dev.hubwarden.repo.id"
REF_ANNOTATION = "dev.hubwarden.ref"
FORMAT_ANNOTATION = "dev.hubwarden.bundle.format"
FORMAT_VERSION = "1"

COPY_CHUNK = 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".ggml", ".onnx", ".h5", ".hdf5",
     ".keras", ".msgpack", ".npz", ".npy", ".pkl", ".pickle", ".joblib", ".tflite", ".pb", ".ot",
     ".mlmodel", ".nemo", ".llamafile"}
)  # fmt: skip
_CODE_SUFFIXES = frozenset(
    {".py", ".ipynb", ".sh", ".js", ".ts", ".c", ".cc", ".cpp", ".h", ".hpp", ".cu", ".rs", ".go",
     ".java"}
)  # fmt: skip
_DOC_SUFFIXES = frozenset({".md", ".rst", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"})
_DOC_STEMS = ("license", "licence", "copying", "notice", "citation", "readme")
_FORMATS = {".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx", ".pt": "pt"}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a bundle may make the reader hold or believe."""

    max_layout_bytes: int = 4096
    max_index_bytes: int = 16 * 1024 * 1024
    max_manifest_bytes: int = 4 * 1024 * 1024
    """What OCI registries commonly accept; about 10,000 files per revision."""
    max_config_bytes: int = 4 * 1024 * 1024
    max_state_bytes: int = 64 * 1024 * 1024
    max_bom_bytes: int = 64 * 1024 * 1024
    max_signature_bytes: int = 16 * 1024 * 1024
    max_metadata_bytes: int = 512 * 1024 * 1024
    """All manifests, configs, state and the signature together (they are held in memory)."""
    max_manifests: int = 20_000
    max_layers: int = 20_000
    max_blob_bytes: int = 1 << 40
    max_json_depth: int = 32
    max_json_items: int = 4_000_000
    """Values in one JSON document: bounds what a small document expands to in memory."""


DEFAULT_LIMITS = Limits()


# -- what an export hands in -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file of a revision: its path in the repo, where its bytes are, and what they must
    hash to (the bytes are hashed again as they are copied)."""

    path: str
    source: Path
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class RevisionContent:
    """One repo revision to export: the files, and Hubwarden's state of it (any JSON object:
    the glue's to define)."""

    repo_type: str
    repo_id: str
    ref: str
    """The branch, tag or commit the revision was asked by."""
    commit: str
    files: Sequence[SourceFile]
    state: Mapping[str, Any]
    bom: bytes | None = None
    """The revision's CycloneDX AI-BOM (JSON), carried as a referrer of its manifest."""

    @property
    def label(self) -> str:
        return f"{self.repo_type}/{self.repo_id}@{self.ref}"


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    """Hex sha256 (without the `sha256:` prefix)."""
    size: int
    artifact_type: str | None = None
    annotations: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": f"sha256:{self.digest}",
            "size": self.size,
        }
        if self.artifact_type:
            document["artifactType"] = self.artifact_type
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        return document


EMPTY_DESCRIPTOR = Descriptor(EMPTY_MEDIA_TYPE, hashlib.sha256(EMPTY_BLOB).hexdigest(), 2)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything of a bundle but its signature: the small blobs (in the order they are
    written), the manifests index.json lists, what the signature must cover, and the files."""

    small: Mapping[str, bytes]
    manifests: Sequence[Descriptor]
    subjects: Sequence[Subject]
    files: Sequence[SourceFile]
    """The files to write, one per digest, in the order they are written."""
    omitted: frozenset[str]
    """Digests of files referenced but left out (a previous bundle carried them)."""

    @property
    def file_bytes(self) -> int:
        return sum(f.size for f in self.files)


def subject_names(label: str) -> tuple[str, str, str]:
    """What a revision's model manifest, state manifest and state blob are called in the
    signed statement."""
    return f"manifest:{label}", f"state-manifest:{label}", f"state:{label}"


def bom_subject_names(label: str) -> tuple[str, str]:
    """What a revision's BOM manifest and BOM blob are called in the signed statement."""
    return f"bom-manifest:{label}", f"bom:{label}"


def plan(
    revisions: Sequence[RevisionContent],
    *,
    since: Iterable[str] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> Plan:
    """Build the manifests and state blobs of `revisions`. `since` holds the (hex) digests of
    files a previous bundle carried: they are referenced, not written. Raises BundleError for
    an empty list, a duplicate revision, a revision without files, or a value out of bounds."""
    if not revisions:
        raise BundleError("nothing to export: name at least one repo revision")
    if len(revisions) * 3 + 1 > limits.max_manifests:
        raise BundleError(
            f"{len(revisions)} revisions are more than one bundle holds "
            f"({(limits.max_manifests - 1) // 3}); export them in several bundles"
        )
    since_set = frozenset(since)
    small: dict[str, bytes] = {}
    later: dict[str, bytes] = {}  # configs and state, written after every manifest
    model_manifests: list[Descriptor] = []
    state_manifests: list[Descriptor] = []
    bom_manifests: list[Descriptor] = []
    subjects: list[Subject] = []
    files: dict[str, SourceFile] = {}
    labels: set[str] = set()
    for revision in revisions:
        _check_revision(revision)
        if revision.label in labels:
            raise BundleError(f"revision {shown(revision.label)} is listed twice")
        labels.add(revision.label)
        manifest, config = _model_manifest(revision, limits)
        model = _add_blob(small, manifest, MANIFEST_MEDIA_TYPE)
        model = Descriptor(
            MANIFEST_MEDIA_TYPE,
            model.digest,
            model.size,
            MODEL_ARTIFACT_TYPE,
            _ref_name(revision),
        )
        _add_blob(later, config, MODEL_CONFIG_MEDIA_TYPE)
        state = _state_bytes(revision, limits)
        state_blob = _add_blob(later, state, STATE_MEDIA_TYPE)
        state_manifest = _add_blob(
            small,
            _artifact_manifest(STATE_MEDIA_TYPE, state_blob, subject=model),
            MANIFEST_MEDIA_TYPE,
        )
        state_manifest = Descriptor(
            MANIFEST_MEDIA_TYPE, state_manifest.digest, state_manifest.size, STATE_MEDIA_TYPE
        )
        model_manifests.append(model)
        state_manifests.append(state_manifest)
        names = subject_names(revision.label)
        subjects += [
            Subject(names[0], model.digest),
            Subject(names[1], state_manifest.digest),
            Subject(names[2], state_blob.digest),
        ]
        if revision.bom is not None:
            bom_manifest, bom_subjects = _bom(revision, model, small, later, limits)
            bom_manifests.append(bom_manifest)
            subjects += bom_subjects
        for file in revision.files:
            known = files.setdefault(file.sha256, file)
            if known.size != file.size:
                raise BundleError(
                    f"sha256:{file.sha256} is given as {known.size} and {file.size} bytes"
                )
    later[EMPTY_DESCRIPTOR.digest] = EMPTY_BLOB
    for digest, data in later.items():
        small.setdefault(digest, data)
    omitted = frozenset(d for d in files if d in since_set and d not in small)
    written = [f for d, f in files.items() if d not in small and d not in omitted]
    total = sum(len(b) for b in small.values())
    if total > limits.max_metadata_bytes:
        raise BundleError(
            f"the manifests and state come to {total} bytes, more than the "
            f"{limits.max_metadata_bytes} a bundle may hold; export fewer revisions at once"
        )
    manifests = model_manifests + state_manifests + bom_manifests
    return Plan(small, manifests, subjects, written, omitted)


def _bom(
    revision: RevisionContent,
    model: Descriptor,
    small: dict[str, bytes],
    later: dict[str, bytes],
    limits: Limits,
) -> tuple[Descriptor, list[Subject]]:
    """The BOM referrer of a revision's manifest (its manifest goes with the manifests, its blob
    with the state) and the two subjects the signature covers."""
    bom = revision.bom or b""
    if len(bom) > limits.max_bom_bytes:
        raise BundleError(
            f"the BOM of {shown(revision.label)} is {len(bom)} bytes, more than the "
            f"{limits.max_bom_bytes} a bundle may hold"
        )
    blob = _add_blob(later, bom, BOM_MEDIA_TYPE)
    manifest = _add_blob(
        small, _artifact_manifest(BOM_MEDIA_TYPE, blob, subject=model), MANIFEST_MEDIA_TYPE
    )
    names = bom_subject_names(revision.label)
    descriptor = Descriptor(MANIFEST_MEDIA_TYPE, manifest.digest, manifest.size, BOM_MEDIA_TYPE)
    return descriptor, [Subject(names[0], manifest.digest), Subject(names[1], blob.digest)]


def _state_bytes(revision: RevisionContent, limits: Limits) -> bytes:
    """The state as JSON, refused here when a reader would refuse it."""
    try:
        state = _dumps(dict(revision.state))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"the state of {shown(revision.label)} is not JSON: {exc}") from None
    if len(state) > limits.max_state_bytes:
        raise BundleError(
            f"the state of {shown(revision.label)} is {len(state)} bytes, more than the "
            f"{limits.max_state_bytes} a bundle may hold"
        )
    _json(state, f"the state of {shown(revision.label)}", limits)
    return state


def _check_revision(revision: RevisionContent) -> None:
    try:
        repo_type = RepoType(revision.repo_type)
        RepoRef.parse(repo_type, revision.repo_id)
        Revision.parse(revision.ref)
        paths = [RepoPath.parse(f.path).value for f in revision.files]
    except (ValueError, InvalidInput) as exc:
        raise BundleError(f"revision {shown(revision.label)}: {exc}") from None
    if not is_commit_sha(revision.commit):
        raise BundleError(f"revision {shown(revision.label)}: commit is not 40 hex characters")
    if not revision.files:
        raise BundleError(
            f"revision {shown(revision.label)} has no files; a ModelPack manifest needs at least "
            "one (leave the revision out)"
        )
    if len(set(paths)) != len(paths):
        raise BundleError(f"revision {shown(revision.label)} lists a file twice")
    for file in revision.files:
        if not _SHA256_HEX.fullmatch(file.sha256) or file.size < 0:
            raise BundleError(
                f"revision {shown(revision.label)}: file {shown(file.path)} needs a hex sha256 "
                "and a size"
            )


def layer_media_type(path: str, repo_type: str) -> str:
    """The ModelPack layer kind of a file, guessed from its name (the layer says so with
    `org.cncf.model.file.mediatype.untested`)."""
    name = PurePosixPath(path).name.lower()
    suffix = PurePosixPath(name).suffix
    if suffix in _DOC_SUFFIXES or name.startswith(_DOC_STEMS):
        return DOC_MEDIA_TYPE
    if repo_type == RepoType.DATASET:
        return DATASET_MEDIA_TYPE
    if suffix in _WEIGHT_SUFFIXES:
        return WEIGHT_MEDIA_TYPE
    if suffix in _CODE_SUFFIXES:
        return CODE_MEDIA_TYPE
    return WEIGHT_CONFIG_MEDIA_TYPE


def _model_manifest(revision: RevisionContent, limits: Limits) -> tuple[bytes, bytes]:
    if len(revision.files) > limits.max_layers:
        raise BundleError(
            f"revision {shown(revision.label)} has {len(revision.files)} files, more than the "
            f"{limits.max_layers} a manifest may list"
        )
    layers = [
        Descriptor(
            layer_media_type(f.path, revision.repo_type),
            f.sha256,
            f.size,
            annotations={
                FILEPATH_ANNOTATION: f.path,
                TITLE_ANNOTATION: f.path,
                UNTESTED_ANNOTATION: "true",
            },
        )
        for f in revision.files
    ]
    formats = {
        _FORMATS[PurePosixPath(f.path).suffix]
        for f in revision.files
        if PurePosixPath(f.path).suffix in _FORMATS
    }
    model_config: dict[str, Any] = {"format": formats.pop()} if len(formats) == 1 else {}
    config = _dumps(
        {
            "descriptor": {"name": revision.repo_id, "revision": revision.commit},
            "config": model_config,
            "modelfs": {"type": "layers", "diffIds": [f"sha256:{f.digest}" for f in layers]},
        }
    )
    manifest = _dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": MODEL_ARTIFACT_TYPE,
            "config": Descriptor(MODEL_CONFIG_MEDIA_TYPE, _sha256(config), len(config)).to_json(),
            "layers": [layer.to_json() for layer in layers],
            "annotations": {
                REPO_TYPE_ANNOTATION: revision.repo_type,
                REPO_ID_ANNOTATION: revision.repo_id,
                REF_ANNOTATION: revision.ref,
                COMMIT_ANNOTATION: revision.commit,
            },
        }
    )
    if len(manifest) > limits.max_manifest_bytes:
        raise BundleError(
            f"the manifest of {shown(revision.label)} would be {len(manifest)} bytes, more than "
            f"the {limits.max_manifest_bytes} allowed"
        )
    return manifest, config


def _artifact_manifest(
    artifact_type: str, blob: Descriptor, subject: Descriptor | None = None
) -> bytes:
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": artifact_type,
        "config": EMPTY_DESCRIPTOR.to_json(),
        "layers": [blob.to_json()],
    }
    if subject is not None:
        document["subject"] = Descriptor(
            subject.media_type, subject.digest, subject.size, subject.artifact_type
        ).to_json()
    return _dumps(document)


def _ref_name(revision: RevisionContent) -> dict[str, str] | None:
    """`org.opencontainers.image.ref.name` for `oras … --oci-layout BUNDLE:REF`:
    models--org--name--<commit>, when that is a valid tag (repo ids never hold `--`)."""
    ref = f"{revision.repo_type}s--{revision.repo_id.replace('/', '--')}--{revision.commit}"
    return {REF_NAME_ANNOTATION: ref} if _TAG.fullmatch(ref) else None


def _add_blob(blobs: dict[str, bytes], data: bytes, media_type: str) -> Descriptor:
    digest = _sha256(data)
    blobs.setdefault(digest, data)
    return Descriptor(media_type, digest, len(data))


def signature_blobs(signature: bytes) -> tuple[Descriptor, dict[str, bytes]]:
    """The signature's manifest descriptor (for index.json) and blobs (manifest, bundle)."""
    bundle = Descriptor(SIGNATURE_MEDIA_TYPE, _sha256(signature), len(signature))
    manifest = _artifact_manifest(SIGNATURE_MEDIA_TYPE, bundle)
    descriptor = Descriptor(
        MANIFEST_MEDIA_TYPE, _sha256(manifest), len(manifest), SIGNATURE_MEDIA_TYPE
    )
    return descriptor, {descriptor.digest: manifest, bundle.digest: signature}


def _index(manifests: Sequence[Descriptor]) -> bytes:
    return _dumps(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [m.to_json() for m in manifests],
            "annotations": {FORMAT_ANNOTATION: FORMAT_VERSION},
        }
    )


def _layout() -> bytes:
    return _dumps({"imageLayoutVersion": LAYOUT_VERSION})


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- writing ------------------------------------------------------------------------------------

Progress = Callable[[int], None]
"""Called with the number of file bytes just written."""


class Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


def _ordered_members(plan: Plan, signature: bytes) -> tuple[bytes, dict[str, bytes]]:
    """index.json and the small blobs in writing order: manifests, then the rest."""
    descriptor, signature_parts = signature_blobs(signature)
    index = _index([*plan.manifests, descriptor])
    manifests = {m.digest for m in plan.manifests} | {descriptor.digest}
    ordered = {d: b for d, b in plan.small.items() if d in manifests}
    ordered[descriptor.digest] = signature_parts[descriptor.digest]
    for digest, data in [*plan.small.items(), *signature_parts.items()]:
        ordered.setdefault(digest, data)
    return index, ordered


def write_tar(plan: Plan, signature: bytes, out: Writable, progress: Progress | None = None) -> int:
    """Write the bundle as one tar stream into `out`; returns the bytes written. Raises
    BundleError when a file's bytes are not what the plan says (`out` is then unusable)."""
    index, small = _ordered_members(plan, signature)
    written = 0

    def put(data: bytes | memoryview) -> None:
        nonlocal written
        out.write(data)
        written += len(data)

    for name, data in [(LAYOUT_FILE, _layout()), (INDEX_FILE, index)] + [
        (f"{BLOBS_DIR}/{d}", b) for d, b in small.items()
    ]:
        put(tarstream.member_header(name, len(data)))
        put(data)
        put(tarstream.padding(len(data)))
    for file in plan.files:
        if file.sha256 in small:
            continue
        put(tarstream.member_header(f"{BLOBS_DIR}/{file.sha256}", file.size))
        _copy_verified(file, put, progress)
        put(tarstream.padding(file.size))
    put(tarstream.end_of_archive(written))
    return written


def write_directory(
    plan: Plan, signature: bytes, directory: Path, progress: Progress | None = None
) -> None:
    """Write the bundle as an OCI layout directory (which must not exist). Raises BundleError."""
    index, small = _ordered_members(plan, signature)
    blobs = directory / BLOBS_DIR
    blobs.mkdir(parents=True)
    for digest, data in small.items():
        with _new_file(blobs / digest) as put:
            put(data)
    for file in plan.files:
        if file.sha256 not in small:
            with _new_file(blobs / file.sha256) as put:
                _copy_verified(file, put, progress)
    for name, data in ((LAYOUT_FILE, _layout()), (INDEX_FILE, index)):
        with _new_file(directory / name) as put:
            put(data)
    for folder in (blobs, blobs.parent, directory):
        _fsync_dir(folder)


def write(
    plan: Plan,
    signature: bytes,
    out: Path,
    *,
    directory: bool = False,
    split: int | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Write the bundle at `out`: a tar file, `out.000`, `out.001`… of `split` bytes each, or an
    OCI layout directory. Nothing appears under the final names unless every file was copied
    and verified. Returns the paths written. Raises BundleError (an existing output is never
    replaced)."""
    if directory and split is not None:
        raise BundleError("--split applies to a tar bundle, not a directory")
    _refuse_existing(out)
    partial = out.with_name(f"{out.name}.partial")
    try:
        if directory:
            shutil.rmtree(partial, ignore_errors=True)
            write_directory(plan, signature, partial, progress)
            partial.rename(out)
            return [out]
        if split is None:
            with partial.open("wb") as stream:
                write_tar(plan, signature, stream, progress)
                stream.flush()
                os.fsync(stream.fileno())
            partial.rename(out)
            return [out]
        splitter = tarstream.SplitWriter(partial, split)
        with splitter:
            write_tar(plan, signature, splitter, progress)
        finals = [tarstream.part_path(out, i) for i in range(len(splitter.parts))]
        for part, final in zip(splitter.parts, finals, strict=True):
            part.rename(final)
        _fsync_dir(out.parent)
        return finals
    except BaseException:
        _remove_partial(partial)
        raise


def _refuse_existing(out: Path) -> None:
    taken = [p for p in (out, tarstream.part_path(out, 0)) if p.exists() or p.is_symlink()]
    if taken:
        raise BundleError(f"{taken[0]} already exists; choose another --out (or remove it)")
    if not out.parent.is_dir():
        raise BundleError(f"the folder {out.parent} does not exist; create it or choose another")


def _remove_partial(partial: Path) -> None:
    if partial.is_dir() and not partial.is_symlink():
        shutil.rmtree(partial, ignore_errors=True)
    for path in [partial, *partial.parent.glob(f"{glob.escape(partial.name)}.*")]:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            path.unlink()


def _copy_verified(
    file: SourceFile, put: Callable[[memoryview], object], progress: Progress | None
) -> None:
    """Copy `file` through `put` in chunks, hashing as it goes; raises BundleError when its
    bytes are not the size and sha256 the plan promised (the store changed under the export)."""
    digest = hashlib.sha256()
    total = 0
    buffer = bytearray(COPY_CHUNK)
    view = memoryview(buffer)
    try:
        with file.source.open("rb", buffering=0) as source:
            while count := source.readinto(buffer):
                total += count
                if total > file.size:
                    break
                chunk = view[:count]
                digest.update(chunk)
                put(chunk)
                if progress is not None:
                    progress(count)
    except OSError as exc:
        raise BundleError(
            f"cannot read {shown(file.path)} from {file.source}: {exc.strerror}"
        ) from None
    if total != file.size or not _same(digest.hexdigest(), file.sha256):
        raise BundleError(
            f"{shown(file.path)} ({file.source}) is not the blob sha256:{file.sha256} of "
            f"{file.size} bytes it should be; the store changed or is damaged "
            "(run `hubwarden doctor`)"
        )


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


@contextlib.contextmanager
def _new_file(path: Path) -> Iterator[Callable[[bytes | memoryview], object]]:
    """A new file's write function; the file is flushed and fsynced when the block ends."""
    with path.open("xb") as stream:
        yield stream.write
        stream.flush()
        os.fsync(stream.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layer:
    path: str
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class RevisionEntry:
    """One revision of a bundle, as its (signed) manifest and state say."""

    repo_type: str
    repo_id: str
    ref: str
    commit: str
    manifest_digest: str
    layers: tuple[Layer, ...]
    state: Any
    """The state blob, parsed (bounded); its shape is the glue's to check."""
    bom: bytes | None = None
    """The revision's AI-BOM as carried (its sha256 checked, its content not yet)."""

    @property
    def label(self) -> str:
        return f"{self.repo_type}/{self.repo_id}@{self.ref}"


@dataclass(frozen=True, slots=True)
class Contents:
    """What a bundle says before any file streams: its revisions, the subjects its signature
    must cover, the signature, and every file it references."""

    revisions: tuple[RevisionEntry, ...]
    subjects: tuple[Subject, ...]
    signature: bytes
    files: Mapping[str, int]
    """Every referenced file: digest → size (present in the bundle or not)."""

    @property
    def file_bytes(self) -> int:
        return sum(self.files.values())


class IncomingBlob:
    """One file blob as it streams out of a bundle. Iterate `chunks()` once: it raises
    BundleError when the bytes end short or hash differently; the last chunk is followed by
    that check, so treat the bytes as unverified until the iteration ends without error."""

    def __init__(self, digest: str, size: int, read: Callable[[int], bytes]) -> None:
        self.digest = digest
        self.size = size
        self._read = read
        self._chunks: Iterator[bytes] | None = None

    def chunks(self, chunk_size: int = COPY_CHUNK) -> Iterator[bytes]:
        if self._chunks is not None:
            raise RuntimeError("a blob's chunks are read once")
        self._chunks = self._checked(chunk_size)
        return self._chunks

    def _checked(self, chunk_size: int) -> Iterator[bytes]:
        digest = hashlib.sha256()
        left = self.size
        while left:
            data = self._read(min(chunk_size, left))
            if not data:
                raise BundleError(
                    f"blob sha256:{self.digest} ends {left} bytes short: the bundle is truncated"
                )
            left -= len(data)
            digest.update(data)
            yield data
        if self._read(1):
            raise BundleError(f"blob sha256:{self.digest} is longer than its {self.size} bytes")
        if not _same(digest.hexdigest(), self.digest):
            raise BundleError(
                f"blob sha256:{self.digest} does not hash to its digest: the bundle is damaged "
                "or was altered"
            )

    def drain(self) -> None:
        """Read (and check) what the caller did not read, even when it stopped half-way."""
        for _chunk in self._chunks if self._chunks is not None else self.chunks():
            pass


class _Source(Protocol):
    small_digests: set[str]
    expect_files: Mapping[str, int]
    index: bytes

    def take(self, pending: Mapping[str, int]) -> tuple[str, bytes]:
        """One of the `pending` small blobs (digest → size), checked: which the source
        chooses (a tar: the next member; a directory: any)."""

    def files(self, wanted: Mapping[str, int], have: set[str]) -> Iterator[IncomingBlob]:
        """The file blobs of `wanted` present in the bundle (not those in `have`)."""

    def close(self) -> None: ...


class BundleReader:
    """Opens a bundle (directory, tar, or split tar) and reads everything but the files:
    `contents`. Then `blobs()` streams the files, each checked. `absent` (after `blobs()` is
    exhausted) lists the files referenced but not carried."""

    def __init__(self, path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._source = _open_source(path, limits)
        self.absent: frozenset[str] | None = None
        self._streamed = False
        try:
            self.contents = _read_contents(self._source, limits)
        except BaseException:
            self._source.close()
            raise

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._source.close()

    def blobs(self) -> Iterator[IncomingBlob]:
        """Each file blob the bundle carries, once, streamed and checked (a blob left unread by
        the caller is read and checked before the next). Raises BundleError."""
        if self._streamed:
            raise RuntimeError("a bundle's blobs are streamed once")
        self._streamed = True
        have = set(self._source.small_digests)
        received: set[str] = set()
        for blob in self._source.files(self.contents.files, have):
            yield blob
            blob.drain()
            received.add(blob.digest)
        self.absent = frozenset(self.contents.files) - received - have


def read_contents(path: Path, limits: Limits = DEFAULT_LIMITS) -> Contents:
    """A bundle's contents (no file is streamed; a tar is read only up to its files)."""
    with BundleReader(path, limits) as reader:
        return reader.contents


# The source of small blobs and files: a tar stream or a directory.


class _TarSource:
    def __init__(self, stream: BinaryIO, limits: Limits) -> None:
        self._stream = stream
        self._tar = tarstream.TarReader(stream)
        self._limits = limits
        self._seen: set[str] = set()
        self.small_digests: set[str] = set()
        self.expect_files: Mapping[str, int] = {}
        layout = self._top(LAYOUT_FILE, limits.max_layout_bytes)
        _check_layout(layout, limits)
        self.index = self._top(INDEX_FILE, limits.max_index_bytes)

    def _next_file(self) -> tarstream.TarMember | None:
        while (member := self._tar.next()) is not None:
            name = _check_member_name(member.name, member.is_dir)
            if member.is_dir:
                continue
            if name in self._seen:
                raise BundleError(f'member "{shown(name)}" appears twice in the bundle')
            self._seen.add(name)
            return member
        return None

    def _top(self, name: str, limit: int) -> bytes:
        member = self._next_file()
        if member is None or member.name != name:
            found = "the end" if member is None else f'"{shown(member.name)}"'
            raise BundleError(
                f'the bundle must begin with "{LAYOUT_FILE}" then "{INDEX_FILE}"; found {found} '
                f'where "{name}" belongs (write bundles with `hubwarden export`)'
            )
        if member.size > limit:
            raise BundleError(f'"{name}" is {member.size} bytes, more than the {limit} allowed')
        return self._read_member(member.size)

    def _read_member(self, size: int) -> bytes:
        data = self._tar.read(size)
        if len(data) != size:
            raise BundleError("the bundle is truncated inside a member; copy it again")
        return data

    def take(self, pending: Mapping[str, int]) -> tuple[str, bytes]:
        member = self._next_file()
        if member is None:
            raise BundleError(
                f"the bundle ends before {len(pending)} of its manifests' blobs (first: "
                f"sha256:{next(iter(pending))}): it is truncated"
            )
        digest = _blob_digest(member.name)
        if digest not in pending:
            if digest in self.expect_files:
                raise BundleError(
                    f"file blob sha256:{digest} comes before the manifests and signature are "
                    "complete; the importer must check the signature first (write bundles "
                    "with `hubwarden export`)"
                )
            raise BundleError(
                f'member "{shown(member.name)}" is not referenced by index.json or by a manifest '
                "before it"
            )
        if member.size != pending[digest]:
            raise BundleError(
                f"blob sha256:{digest} is {member.size} bytes; its descriptor says "
                f"{pending[digest]}"
            )
        data = self._read_member(member.size)
        _check_digest(data, digest)
        self.small_digests.add(digest)
        return digest, data

    def files(self, wanted: Mapping[str, int], have: set[str]) -> Iterator[IncomingBlob]:
        while (member := self._next_file()) is not None:
            digest = _blob_digest(member.name)
            if digest not in wanted or digest in have:
                raise BundleError(
                    f'member "{shown(member.name)}" is not a file any manifest references'
                )
            if member.size != wanted[digest]:
                raise BundleError(
                    f"blob sha256:{digest} is {member.size} bytes; its manifest says "
                    f"{wanted[digest]}"
                )
            have.add(digest)
            yield IncomingBlob(digest, member.size, self._tar.read)

    def close(self) -> None:
        self._stream.close()


class _DirectorySource:
    def __init__(self, root: Path, limits: Limits) -> None:
        self._root = root
        self._limits = limits
        self.small_digests: set[str] = set()
        self.expect_files: Mapping[str, int] = {}
        _check_layout(self._read(root / LAYOUT_FILE, limits.max_layout_bytes), limits)
        self.index = self._read(root / INDEX_FILE, limits.max_index_bytes)

    def _read(self, path: Path, limit: int) -> bytes:
        with self._open(path) as (stream, size):
            if size > limit:
                raise BundleError(f'"{path.name}" is {size} bytes, more than the {limit} allowed')
            return stream.read(limit + 1)

    @contextlib.contextmanager
    def _open(self, path: Path) -> Iterator[tuple[BinaryIO, int]]:
        """Open a file of the layout: a regular file, never through a symlink."""
        relative = path.relative_to(self._root)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BundleError(f'the bundle has no "{relative}"') from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise BundleError(
                    f'"{relative}" is a symbolic link; a bundle holds regular files'
                ) from None
            raise BundleError(f'cannot read "{relative}": {exc.strerror}') from None
        stream = os.fdopen(fd, "rb")
        with stream:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise BundleError(f'"{relative}" is not a regular file')
            yield stream, status.st_size

    def _check_dirs(self) -> None:
        for folder in (self._root / "blobs", self._root / BLOBS_DIR):
            if folder.is_symlink():
                raise BundleError(f'"{folder.relative_to(self._root)}" is a symbolic link')

    def take(self, pending: Mapping[str, int]) -> tuple[str, bytes]:
        self._check_dirs()
        digest, size = next(iter(pending.items()))
        with self._open(self._root / BLOBS_DIR / digest) as (stream, actual):
            if actual != size:
                raise BundleError(
                    f"blob sha256:{digest} is {actual} bytes; its descriptor says {size}"
                )
            data = stream.read(size + 1)
        _check_digest(data, digest)
        self.small_digests.add(digest)
        return digest, data

    def files(self, wanted: Mapping[str, int], have: set[str]) -> Iterator[IncomingBlob]:
        self._check_dirs()
        for digest, size in wanted.items():
            if digest in have:
                continue
            path = self._root / BLOBS_DIR / digest
            if not path.exists() and not path.is_symlink():
                continue  # omitted: the caller compares `absent` with what was declared
            with self._open(path) as (stream, actual):
                if actual != size:
                    raise BundleError(
                        f"blob sha256:{digest} is {actual} bytes; its manifest says {size}"
                    )
                have.add(digest)
                yield IncomingBlob(digest, size, stream.read)

    def close(self) -> None:
        pass


def _open_source(path: Path, limits: Limits) -> _TarSource | _DirectorySource:
    if path.is_dir():
        return _DirectorySource(path, limits)
    parts = tarstream.find_parts(path)
    if parts is None:
        if not path.is_file():
            raise BundleError(f"no bundle at {path} (nor split parts {path.name}.000…)")
        parts = [path]
    buffered = io.BufferedReader(tarstream.PartsReader(parts), buffer_size=COPY_CHUNK)
    try:
        return _TarSource(buffered, limits)
    except BaseException:
        buffered.close()
        raise


def _check_member_name(name: str, is_dir: bool) -> str:
    """Refuse a member name that is unsafe, then one that is not part of a layout."""
    if "\x00" in name or "\\" in name:
        raise BundleError(f'member name "{shown(name)}" holds a NUL or a backslash')
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise BundleError(f'member name "{shown(name)}" is absolute')
    if ".." in name.split("/"):
        raise BundleError(f'member name "{shown(name)}" climbs out of the bundle (path traversal)')
    if is_dir:
        if name.rstrip("/") not in ("blobs", BLOBS_DIR):
            raise BundleError(f'directory member "{shown(name)}" is not part of an OCI layout')
        return name
    if name in (LAYOUT_FILE, INDEX_FILE):
        return name
    _blob_digest(name)
    return name


def _blob_digest(name: str) -> str:
    match = re.fullmatch(rf"{BLOBS_DIR}/([0-9a-f]{{64}})", name)
    if match is None:
        raise BundleError(
            f'member "{shown(name)}" is not "{LAYOUT_FILE}", "{INDEX_FILE}" or '
            f'"{BLOBS_DIR}/<sha256 hex>"'
        )
    return match.group(1)


def _check_digest(data: bytes, digest: str) -> None:
    if not _same(_sha256(data), digest):
        raise BundleError(
            f"blob sha256:{digest} does not hash to its digest: the bundle is damaged or was "
            "altered"
        )


# Parsing the metadata.


def _json(data: bytes, what: str, limits: Limits) -> Any:
    try:
        return load_json(
            data,
            JsonLimits(
                max_bytes=len(data),
                max_depth=limits.max_json_depth,
                max_items=limits.max_json_items,
            ),
        )
    except JsonRefused as exc:
        raise BundleError(f"{what} is not acceptable JSON: {exc}") from None


def _check_layout(data: bytes, limits: Limits) -> None:
    layout = _json(data, f'"{LAYOUT_FILE}"', limits)
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != LAYOUT_VERSION:
        raise BundleError(
            f'"{LAYOUT_FILE}" does not say imageLayoutVersion "{LAYOUT_VERSION}": not an OCI '
            "image layout"
        )


@dataclass(slots=True)
class _Parsed:
    """The metadata as it is gathered."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    """Manifest digest → artifact type."""


def _read_contents(source: _Source, limits: Limits) -> Contents:
    index = _json(source.index, f'"{INDEX_FILE}"', limits)
    entries = _index_entries(index, limits)
    manifest_digests = {e.digest for e in entries}
    parsed = _Parsed()
    pending: dict[str, int] = {d.digest: d.size for d in entries}
    expect_files: dict[str, int] = {}
    source.expect_files = expect_files
    total = 0
    while pending:
        digest, data = source.take(pending)
        del pending[digest]
        total += len(data)
        if total > limits.max_metadata_bytes:
            raise BundleError(
                f"the bundle's manifests and state exceed {limits.max_metadata_bytes} bytes"
            )
        parsed.blobs[digest] = data
        if digest in manifest_digests:
            manifest = _json(data, f"manifest sha256:{digest}", limits)
            role = _check_manifest(manifest, digest, limits)
            parsed.manifests[digest] = manifest
            parsed.roles[digest] = role
            for blob in _referenced_small(manifest, role, limits):
                if blob.digest in parsed.blobs:
                    continue
                if pending.setdefault(blob.digest, blob.size) != blob.size:
                    raise BundleError(f"blob sha256:{blob.digest} is given two sizes")
            if role == MODEL_ARTIFACT_TYPE:
                for layer in manifest["layers"]:
                    layer_digest = _digest_of(layer, "layer", limits)
                    size = layer["size"]
                    if expect_files.setdefault(layer_digest, size) != size:
                        raise BundleError(f"file blob sha256:{layer_digest} is given two sizes")
    return _assemble(entries, parsed, expect_files, limits)


def _index_entries(index: Any, limits: Limits) -> list[Descriptor]:
    if not isinstance(index, dict) or index.get("schemaVersion") != 2:
        raise BundleError(f'"{INDEX_FILE}" is not an OCI image index (schemaVersion 2)')
    if index.get("mediaType", INDEX_MEDIA_TYPE) != INDEX_MEDIA_TYPE:
        raise BundleError(f'"{INDEX_FILE}" has media type "{shown(index.get("mediaType"))}"')
    annotations = index.get("annotations") or {}
    if isinstance(annotations, dict) and annotations.get(FORMAT_ANNOTATION, FORMAT_VERSION) != (
        FORMAT_VERSION
    ):
        raise BundleError(
            f"the bundle is format {shown(annotations.get(FORMAT_ANNOTATION))}; this Hubwarden "
            f"reads format {FORMAT_VERSION}: upgrade it"
        )
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise BundleError(f'"{INDEX_FILE}" lists no manifest: the bundle is empty')
    if len(manifests) > limits.max_manifests:
        raise BundleError(
            f'"{INDEX_FILE}" lists {len(manifests)} manifests, more than the '
            f"{limits.max_manifests} allowed"
        )
    entries: list[Descriptor] = []
    for entry in manifests:
        digest = _digest_of(entry, "index.json entry", limits)
        if entry.get("mediaType") != MANIFEST_MEDIA_TYPE:
            raise BundleError(
                f"index.json entry sha256:{digest} is not an image manifest "
                f'("{shown(entry.get("mediaType"))}"); nested indexes are not used in bundles'
            )
        if entry["size"] > limits.max_manifest_bytes:
            raise BundleError(
                f"manifest sha256:{digest} is {entry['size']} bytes, more than the "
                f"{limits.max_manifest_bytes} allowed"
            )
        if any(e.digest == digest for e in entries):
            raise BundleError(f"index.json lists manifest sha256:{digest} twice")
        entries.append(
            Descriptor(MANIFEST_MEDIA_TYPE, digest, entry["size"], entry.get("artifactType"))
        )
    return entries


def _digest_of(descriptor: Any, what: str, limits: Limits) -> str:
    """The hex digest of a descriptor, its size checked."""
    if not isinstance(descriptor, dict):
        raise BundleError(f"a {what} is not a descriptor object")
    match = _DIGEST.fullmatch(str(descriptor.get("digest", "")))
    if match is None:
        raise BundleError(
            f'a {what} has digest "{shown(descriptor.get("digest"))}"; bundles use sha256 only'
        )
    size = descriptor.get("size")
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or not 0 <= size <= limits.max_blob_bytes
    ):
        raise BundleError(f"{what} sha256:{match.group(1)} has an invalid size")
    return match.group(1)


def _check_manifest(manifest: Any, digest: str, limits: Limits) -> str:
    """The artifact type of a manifest whose common shape is right."""
    where = f"manifest sha256:{digest}"
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise BundleError(f"{where} is not an OCI image manifest (schemaVersion 2)")
    if manifest.get("mediaType") != MANIFEST_MEDIA_TYPE:
        raise BundleError(f'{where} has media type "{shown(manifest.get("mediaType"))}"')
    role = manifest.get("artifactType")
    if role not in (MODEL_ARTIFACT_TYPE, STATE_MEDIA_TYPE, BOM_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE):
        raise BundleError(f'{where} has artifact type "{shown(role)}", unknown to bundles')
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise BundleError(f"{where} has no layers")
    if len(layers) > limits.max_layers:
        raise BundleError(f"{where} has {len(layers)} layers, more than {limits.max_layers}")
    _digest_of(manifest.get("config"), f"{where} config", limits)
    for layer in layers:
        _digest_of(layer, f"{where} layer", limits)
    return str(role)


def _referenced_small(manifest: dict[str, Any], role: str, limits: Limits) -> list[Descriptor]:
    """The small blobs a manifest references (config; state or signature layer), bounded."""
    config = manifest["config"]
    if role == MODEL_ARTIFACT_TYPE:
        if config.get("mediaType") != MODEL_CONFIG_MEDIA_TYPE:
            raise BundleError(
                f'a model manifest\'s config has media type "{shown(config.get("mediaType"))}"'
            )
        bound = limits.max_config_bytes
        blobs = [config]
    else:
        if config.get("mediaType") != EMPTY_MEDIA_TYPE:
            raise BundleError(f"a {shown(role)} manifest's config is not the empty descriptor")
        layers = manifest["layers"]
        if len(layers) != 1 or layers[0].get("mediaType") != role:
            raise BundleError(f"a {shown(role)} manifest must hold one {shown(role)} layer")
        bound = {
            STATE_MEDIA_TYPE: limits.max_state_bytes,
            BOM_MEDIA_TYPE: limits.max_bom_bytes,
        }.get(role, limits.max_signature_bytes)
        blobs = [config, layers[0]]
    result = []
    for blob in blobs:
        digest = _digest_of(blob, "descriptor", limits)
        if blob["size"] > bound:
            raise BundleError(
                f"blob sha256:{digest} is {blob['size']} bytes, more than the {bound} allowed"
            )
        result.append(Descriptor(str(blob.get("mediaType")), digest, blob["size"]))
    return result


def _assemble(
    entries: list[Descriptor], parsed: _Parsed, files: dict[str, int], limits: Limits
) -> Contents:
    models = [e for e in entries if parsed.roles[e.digest] == MODEL_ARTIFACT_TYPE]
    states = [e for e in entries if parsed.roles[e.digest] == STATE_MEDIA_TYPE]
    signatures = [e for e in entries if parsed.roles[e.digest] == SIGNATURE_MEDIA_TYPE]
    for entry in entries:
        if entry.artifact_type not in (None, parsed.roles[entry.digest]):
            raise BundleError(
                f"index.json says manifest sha256:{entry.digest} is "
                f"{shown(entry.artifact_type)}, the manifest says {parsed.roles[entry.digest]}"
            )
    if len(signatures) != 1:
        raise BundleError(
            f"the bundle holds {len(signatures)} signatures; it must hold exactly one"
        )
    if not models:
        raise BundleError("the bundle holds no model manifest: it is empty")
    state_of = _referrers(states, "state", models, parsed, limits)
    bom_of = _referrers(
        [e for e in entries if parsed.roles[e.digest] == BOM_MEDIA_TYPE],
        "BOM",
        models,
        parsed,
        limits,
    )
    revisions: list[RevisionEntry] = []
    subjects: list[Subject] = []
    labels: set[str] = set()
    for model in models:
        if model.digest not in state_of:
            raise BundleError(f"model manifest sha256:{model.digest} has no state")
        revision = _revision(model.digest, state_of[model.digest], parsed, limits)
        if model.digest in bom_of:
            revision, bom_subjects = _with_bom(revision, bom_of[model.digest], parsed, limits)
            subjects += bom_subjects
        if revision.label in labels:
            raise BundleError(f"revision {shown(revision.label)} appears twice")
        labels.add(revision.label)
        revisions.append(revision)
        state_blob = parsed.manifests[state_of[model.digest]]["layers"][0]
        names = subject_names(revision.label)
        subjects += [
            Subject(names[0], model.digest),
            Subject(names[1], state_of[model.digest]),
            Subject(names[2], _digest_of(state_blob, "state", limits)),
        ]
    signature_layer = parsed.manifests[signatures[0].digest]["layers"][0]
    signature = parsed.blobs[_digest_of(signature_layer, "signature", limits)]
    return Contents(tuple(revisions), tuple(subjects), signature, files)


def _referrers(
    entries: Sequence[Descriptor],
    what: str,
    models: Sequence[Descriptor],
    parsed: _Parsed,
    limits: Limits,
) -> dict[str, str]:
    """Model manifest digest → the digest of the one `what` manifest whose subject it is."""
    found: dict[str, str] = {}
    model_digests = {m.digest for m in models}
    for entry in entries:
        manifest = parsed.manifests[entry.digest]
        if "subject" not in manifest:
            raise BundleError(f"{what} manifest sha256:{entry.digest} has no subject")
        subject = _digest_of(manifest["subject"], f"{what} subject", limits)
        if subject not in model_digests:
            raise BundleError(
                f"{what} manifest sha256:{entry.digest} refers to sha256:{subject}, which is not "
                "a model manifest of the bundle"
            )
        if subject in found:
            raise BundleError(f"model manifest sha256:{subject} has two {what} manifests")
        found[subject] = entry.digest
    return found


def _with_bom(
    revision: RevisionEntry, manifest: str, parsed: _Parsed, limits: Limits
) -> tuple[RevisionEntry, list[Subject]]:
    """The revision with its BOM's bytes, and the subjects the signature must cover for it."""
    blob = _digest_of(parsed.manifests[manifest]["layers"][0], "BOM", limits)
    names = bom_subject_names(revision.label)
    subjects = [Subject(names[0], manifest), Subject(names[1], blob)]
    return dataclasses.replace(revision, bom=parsed.blobs[blob]), subjects


def _revision(model: str, state: str, parsed: _Parsed, limits: Limits) -> RevisionEntry:
    manifest = parsed.manifests[model]
    where = f"model manifest sha256:{model}"
    if "subject" in manifest:
        raise BundleError(f"{where} has a subject; model manifests stand alone")
    annotations = manifest.get("annotations")
    if not isinstance(annotations, dict):
        raise BundleError(f"{where} does not say which repo revision it is")
    try:
        repo_type = RepoType(str(annotations.get(REPO_TYPE_ANNOTATION)))
        repo_id = RepoRef.parse(repo_type, str(annotations.get(REPO_ID_ANNOTATION))).repo_id
        ref = Revision.parse(str(annotations.get(REF_ANNOTATION))).name
    except (ValueError, InvalidInput) as exc:
        raise BundleError(f"{where}: {exc}") from None
    commit = str(annotations.get(COMMIT_ANNOTATION))
    if not is_commit_sha(commit):
        raise BundleError(f"{where}: the commit is not 40 hex characters")
    layers: list[Layer] = []
    paths: set[str] = set()
    for layer in manifest["layers"]:
        digest = _digest_of(layer, "layer", limits)
        media_type = layer.get("mediaType")
        if media_type not in LAYER_MEDIA_TYPES:
            raise BundleError(
                f'{where}: layer sha256:{digest} has media type "{shown(media_type)}"; bundles '
                "carry files uncompressed"
            )
        layer_annotations = layer.get("annotations")
        path = (
            layer_annotations.get(FILEPATH_ANNOTATION)
            if isinstance(layer_annotations, dict)
            else None
        )
        try:
            path = RepoPath.parse(str(path)).value if isinstance(path, str) else None
        except InvalidInput as exc:
            raise BundleError(f"{where}: layer sha256:{digest}: {exc}") from None
        if path is None:
            raise BundleError(f"{where}: layer sha256:{digest} names no file path")
        if path in paths:
            raise BundleError(f"{where}: the file {shown(path)} appears twice")
        paths.add(path)
        layers.append(Layer(path, digest, layer["size"], str(media_type)))
    config_digest = _digest_of(manifest["config"], "config", limits)
    config = _json(parsed.blobs[config_digest], f"{where} config", limits)
    diff_ids = config.get("modelfs", {}).get("diffIds") if isinstance(config, dict) else None
    if diff_ids != [f"sha256:{layer.digest}" for layer in layers]:
        raise BundleError(f"{where}: its config's modelfs.diffIds do not match its layers")
    state_layer = parsed.manifests[state]["layers"][0]
    state_digest = _digest_of(state_layer, "state", limits)
    state_value = _json(parsed.blobs[state_digest], f"the state of {repo_id}@{ref}", limits)
    return RevisionEntry(repo_type.value, repo_id, ref, commit, model, tuple(layers), state_value)
