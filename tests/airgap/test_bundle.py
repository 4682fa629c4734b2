"""Signed bundles written and read back: directory, tar and split tar; ModelPack manifests from
real files; the layout as standard tools (oras, tarfile) read it; incremental bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import oras.schemas
import pytest
from oras.layout import Layout

from proxy.airgap import bundle, oci
from proxy.airgap.errors import BundleError
from proxy.airgap.keys import SigningKey, TrustedKey
from tests.airgap.factories import (
    COMMIT,
    CREATED,
    export,
    make_safetensors,
    members_of,
    model_revision,
    read_json,
    revision,
    source_file,
    stored_file,
)

LAYOUTS: dict[str, dict[str, Any]] = {
    "dir": {"directory": True},
    "tar": {},
    "split": {"split": 4096},
}


def _import(
    path: Path, trusted: list[TrustedKey], into: Path
) -> tuple[bundle.VerifiedBundle, list[str]]:
    into.mkdir(exist_ok=True)
    with bundle.VerifiedBundle(path, trusted) as verified:
        return verified, verified.extract(into)


def _blob(layout: Path, digest: str) -> Any:
    return read_json(layout / "blobs" / "sha256" / digest.removeprefix("sha256:"))


def _index(layout: Path) -> dict[str, Any]:
    index: dict[str, Any] = read_json(layout / "index.json")
    return index


def _of_type(layout: Path, artifact_type: str) -> list[dict[str, Any]]:
    return [m for m in _index(layout)["manifests"] if m["artifactType"] == artifact_type]


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_delivers_every_file_verified(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey], layout: str
) -> None:
    rev = model_revision(tmp_path)
    result = export(tmp_path / "bundle", [rev], key, **LAYOUTS[layout])
    assert (result.revisions, result.files_written, result.omitted) == (1, 3, 0)
    verified, written = _import(tmp_path / "bundle", trusted, tmp_path / "in")
    assert verified.key_name == "dmz"
    assert sorted(written) == sorted(f.sha256 for f in rev.files)
    for file in rev.files:
        assert (tmp_path / "in" / file.sha256).read_bytes() == file.source.read_bytes()
    [entry] = verified.revisions
    assert (entry.repo_type, entry.repo_id, entry.ref, entry.commit) == (
        "model", "org/model", "main", COMMIT,
    )  # fmt: skip
    assert [(layer.path, layer.digest) for layer in entry.layers] == [
        (f.path, f.sha256) for f in rev.files
    ]
    assert entry.state == {"refs": {"main": COMMIT}, "pins": []}


def test_split_tar_parts_are_the_tar_cut_in_pieces(tmp_path: Path, key: SigningKey) -> None:
    rev = model_revision(tmp_path)
    parts = export(tmp_path / "b.tar", [rev], key, split=4096).paths
    assert [p.name for p in parts][:3] == ["b.tar.000", "b.tar.001", "b.tar.002"]
    assert all(p.stat().st_size == 4096 for p in parts[:-1])
    joined = tmp_path / "joined.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    names = [name for name, _ in members_of(joined)]
    assert names[:2] == ["oci-layout", "index.json"]


def test_split_tar_opens_by_its_first_part_too(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    export(tmp_path / "b.tar", [model_revision(tmp_path)], key, split=4096)
    with bundle.VerifiedBundle(tmp_path / "b.tar.000", trusted) as verified:
        assert len(verified.revisions) == 1


def test_several_revisions_share_identical_files(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    main = model_revision(tmp_path)
    tag = revision(main.files, ref="v1.0")
    dataset = revision(
        [source_file(tmp_path, "data/train.csv", b"a,b\n1,2\n")],
        repo_type="dataset",
        repo_id="org/data",
    )
    result = export(tmp_path / "b.tar", [main, tag, dataset], key)
    assert result.files_written == 4
    verified, written = _import(tmp_path / "b.tar", trusted, tmp_path / "in")
    assert [r.label for r in verified.revisions] == [
        "model/org/model@main", "model/org/model@v1.0", "dataset/org/data@main",
    ]  # fmt: skip
    assert len(written) == 4


def test_file_identical_to_a_metadata_blob_travels_once(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    empty_json = source_file(tmp_path, "empty.json", b"{}")  # the OCI empty blob's bytes
    rev = revision([empty_json, source_file(tmp_path, "a.txt", b"a")])
    export(tmp_path / "b.tar", [rev], key)
    names = [name for name, _ in members_of(tmp_path / "b.tar")]
    assert len(names) == len(set(names))
    verified, written = _import(tmp_path / "b.tar", trusted, tmp_path / "in")
    assert verified.revisions[0].layers[0].digest == oci.EMPTY_DESCRIPTOR.digest
    assert written == [hashlib.sha256(b"a").hexdigest()]


def test_empty_file_round_trips(tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]) -> None:
    rev = revision([source_file(tmp_path, ".gitkeep", b"")])
    export(tmp_path / "b.tar", [rev], key)
    _, written = _import(tmp_path / "b.tar", trusted, tmp_path / "in")
    assert (tmp_path / "in" / written[0]).read_bytes() == b""


# -- the tar order: everything the signature needs before any file ---------------------------


def test_tar_members_come_metadata_first_files_last(tmp_path: Path, key: SigningKey) -> None:
    rev = model_revision(tmp_path)
    export(tmp_path / "b.tar", [rev], key)
    names = [name for name, _ in members_of(tmp_path / "b.tar")]
    files = {f"blobs/sha256/{f.sha256}" for f in rev.files}
    assert names[:2] == ["oci-layout", "index.json"]
    first_file = min(names.index(n) for n in files)
    assert set(names[first_file:]) == files
    assert len(names) == len(set(names))


def test_tar_is_read_by_the_standard_library_as_a_plain_tar(
    tmp_path: Path, key: SigningKey
) -> None:
    export(tmp_path / "b.tar", [model_revision(tmp_path)], key)
    with tarfile.open(tmp_path / "b.tar") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    Layout(str(tmp_path / "x")).validate()  # raises on what is not an OCI layout


# -- the layout: OCI, ModelPack, as oras reads it ---------------------------------------------


@pytest.fixture
def layout(tmp_path: Path, key: SigningKey) -> Path:
    rev = model_revision(tmp_path)
    export(tmp_path / "layout", [rev], key, directory=True)
    return tmp_path / "layout"


def test_layout_is_valid_for_oras(layout: Path) -> None:
    Layout(str(layout)).validate()  # raises on what is not an OCI layout
    jsonschema.validate(_index(layout), oras.schemas.index)
    assert read_json(layout / "oci-layout") == {"imageLayoutVersion": "1.0.0"}
    for entry in _index(layout)["manifests"]:
        jsonschema.validate(_blob(layout, entry["digest"]), oras.schemas.manifest)


def test_oras_validation_would_catch_a_broken_layout(layout: Path) -> None:
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.1.0"}')
    with pytest.raises(ValueError, match="imageLayoutVersion"):
        Layout(str(layout)).validate()


def test_oras_resolves_each_model_by_its_ref_name_to_blobs_that_exist(layout: Path) -> None:
    oci_layout = Layout(str(layout))
    [model] = _of_type(layout, oci.MODEL_ARTIFACT_TYPE)
    ref = model["annotations"]["org.opencontainers.image.ref.name"]
    assert ref == f"models--org--model--{COMMIT}"
    blobs = oci_layout.get_ordered_blobs(ref)
    manifest = _blob(layout, model["digest"])
    assert blobs == [
        *(layer["digest"] for layer in manifest["layers"]),
        manifest["config"]["digest"],
        model["digest"],
    ]
    assert all(oci_layout.blob_exists(digest) for digest in blobs)


def test_every_blob_is_named_by_its_sha256(layout: Path) -> None:
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_model_manifest_follows_modelpack(layout: Path, tmp_path: Path) -> None:
    [entry] = _of_type(layout, oci.MODEL_ARTIFACT_TYPE)
    manifest = _blob(layout, entry["digest"])
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    weights = make_safetensors(tmp_path / "again.safetensors")  # the same tensors, same bytes
    layers = {
        layer["annotations"]["org.cncf.model.filepath"]: layer for layer in manifest["layers"]
    }
    assert layers["model.safetensors"] == {
        "mediaType": "application/vnd.cncf.model.weight.v1.raw",
        "digest": f"sha256:{hashlib.sha256(weights.read_bytes()).hexdigest()}",
        "size": weights.stat().st_size,
        "annotations": {
            "org.cncf.model.filepath": "model.safetensors",
            "org.opencontainers.image.title": "model.safetensors",
            "org.cncf.model.file.mediatype.untested": "true",
        },
    }
    assert layers["config.json"]["mediaType"] == "application/vnd.cncf.model.weight.config.v1.raw"
    assert layers["README.md"]["mediaType"] == "application/vnd.cncf.model.doc.v1.raw"
    assert manifest["annotations"] == {
        "dev.hubwarden.repo.type": "model",
        "dev.hubwarden.repo.id": "org/model",
        "dev.hubwarden.ref": "main",
        "org.opencontainers.image.revision": COMMIT,
    }


def test_model_config_follows_the_modelpack_config_schema(layout: Path) -> None:
    [entry] = _of_type(layout, oci.MODEL_ARTIFACT_TYPE)
    manifest = _blob(layout, entry["digest"])
    config = _blob(layout, manifest["config"]["digest"])
    # The rules of modelpack/model-spec schema/config-schema.json that this config touches.
    assert set(config) == {"descriptor", "config", "modelfs"}
    assert set(config["descriptor"]) <= {"name", "revision"} and config["descriptor"]["name"]
    assert config["config"] == {"format": "safetensors"}
    assert config["modelfs"] == {
        "type": "layers",
        "diffIds": [layer["digest"] for layer in manifest["layers"]],
    }


def test_state_is_a_referrer_of_its_model_manifest(layout: Path) -> None:
    [model] = _of_type(layout, oci.MODEL_ARTIFACT_TYPE)
    [state] = _of_type(layout, "application/vnd.hubwarden.state.v1+json")
    manifest = _blob(layout, state["digest"])
    assert manifest["subject"] == {
        "mediaType": model["mediaType"],
        "digest": model["digest"],
        "size": model["size"],
        "artifactType": oci.MODEL_ARTIFACT_TYPE,
    }
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    assert [layer["mediaType"] for layer in manifest["layers"]] == [oci.STATE_MEDIA_TYPE]
    assert _blob(layout, manifest["layers"][0]["digest"]) == {
        "refs": {"main": COMMIT},
        "pins": [],
    }


def test_signature_artifact_signs_every_manifest_and_state_blob(layout: Path) -> None:
    [signature] = _of_type(layout, "application/vnd.dev.sigstore.bundle.v0.3+json")
    manifest = _blob(layout, signature["digest"])
    assert "subject" not in manifest
    sigstore = _blob(layout, manifest["layers"][0]["digest"])
    assert sigstore["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    statement = json.loads(base64.b64decode(sigstore["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == bundle.PREDICATE_TYPE
    [model] = _of_type(layout, oci.MODEL_ARTIFACT_TYPE)
    [state] = _of_type(layout, oci.STATE_MEDIA_TYPE)
    state_blob = _blob(layout, state["digest"])["layers"][0]["digest"]
    assert {(s["name"], s["digest"]["sha256"]) for s in statement["subject"]} == {
        ("manifest:model/org/model@main", model["digest"].removeprefix("sha256:")),
        ("state-manifest:model/org/model@main", state["digest"].removeprefix("sha256:")),
        ("state:model/org/model@main", state_blob.removeprefix("sha256:")),
    }
    assert statement["predicate"]["omitted"] == []
    assert statement["predicate"]["exporter"]["instance"] == "dmz"


@pytest.mark.parametrize(
    ("path", "repo_type", "media_type"),
    [
        ("pytorch_model.bin", "model", oci.WEIGHT_MEDIA_TYPE),
        ("q/model-Q4_K_M.gguf", "model", oci.WEIGHT_MEDIA_TYPE),
        ("tokenizer.json", "model", oci.WEIGHT_CONFIG_MEDIA_TYPE),
        ("modeling_custom.py", "model", oci.CODE_MEDIA_TYPE),
        ("LICENSE", "model", oci.DOC_MEDIA_TYPE),
        ("data/train-00000.parquet", "dataset", oci.DATASET_MEDIA_TYPE),
        ("README.md", "dataset", oci.DOC_MEDIA_TYPE),
    ],
)
def test_layer_media_type_by_file_kind(path: str, repo_type: str, media_type: str) -> None:
    assert oci.layer_media_type(path, repo_type) == media_type


# -- incremental bundles --------------------------------------------------------------------------


def test_incremental_bundle_carries_only_new_files(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    first = model_revision(tmp_path)
    export(tmp_path / "one.tar", [first], key)
    since = bundle.previous_files(tmp_path / "one.tar")
    weights = make_safetensors(tmp_path / "v2" / "model.safetensors", seed=2)
    second = revision(
        [stored_file("model.safetensors", weights), *first.files[1:]], commit="f" * 40
    )
    result = export(tmp_path / "two.tar", [second], key, since=since)
    assert (result.files_written, result.omitted) == (1, 2)
    verified, written = _import(tmp_path / "two.tar", trusted, tmp_path / "in")
    assert written == [hashlib.sha256(weights.read_bytes()).hexdigest()]
    assert verified.omitted == {f.sha256 for f in first.files[1:]}
    assert [layer.path for layer in verified.revisions[0].layers] == [
        "model.safetensors", "config.json", "README.md",
    ]  # fmt: skip


def test_incremental_bundle_with_no_new_file_still_carries_the_state(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    rev = model_revision(tmp_path)
    export(tmp_path / "one.tar", [rev], key)
    since = bundle.previous_files(tmp_path / "one.tar")
    moved = revision(rev.files, state={"refs": {"main": COMMIT}, "pins": ["new"]})
    export(tmp_path / "two.tar", [moved], key, since=since)
    verified, written = _import(tmp_path / "two.tar", trusted, tmp_path / "in")
    assert written == []
    assert verified.revisions[0].state["pins"] == ["new"]
    assert verified.carried_bytes == 0


# -- what the writer refuses ------------------------------------------------------------------


def test_export_of_nothing_is_refused(tmp_path: Path, key: SigningKey) -> None:
    with pytest.raises(BundleError, match="nothing to export"):
        export(tmp_path / "b.tar", [], key)
    assert list(tmp_path.iterdir()) == [tmp_path / "dmz"]


def test_export_of_a_revision_without_files_is_refused(tmp_path: Path, key: SigningKey) -> None:
    with pytest.raises(BundleError, match="has no files; a ModelPack manifest needs"):
        export(tmp_path / "b.tar", [revision([])], key)


def test_export_never_replaces_an_existing_bundle(tmp_path: Path, key: SigningKey) -> None:
    (tmp_path / "b.tar").write_bytes(b"precious")
    with pytest.raises(BundleError, match="already exists"):
        export(tmp_path / "b.tar", [model_revision(tmp_path)], key)
    assert (tmp_path / "b.tar").read_bytes() == b"precious"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_of_a_file_changed_in_the_store_leaves_nothing(
    tmp_path: Path, key: SigningKey, layout: str
) -> None:
    rev = model_revision(tmp_path)
    rev.files[0].source.write_bytes(b"replaced behind the export's back")
    before = set(tmp_path.iterdir())
    with pytest.raises(BundleError, match=r"model.safetensors .* is not the blob sha256:"):
        export(tmp_path / "b.tar", [rev], key, **LAYOUTS[layout])
    assert set(tmp_path.iterdir()) == before


def test_export_refuses_a_duplicate_revision(tmp_path: Path, key: SigningKey) -> None:
    rev = model_revision(tmp_path)
    with pytest.raises(BundleError, match="listed twice"):
        export(tmp_path / "b.tar", [rev, rev], key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repo_id": "../etc"}, "repo id"),
        ({"ref": "refs/heads/../x"}, "revision"),
        ({"commit": "main"}, "commit is not 40 hex"),
        ({"repo_type": "kernel"}, "kernel"),
    ],
)
def test_export_refuses_an_invalid_revision(
    tmp_path: Path, key: SigningKey, change: dict[str, str], message: str
) -> None:
    rev = model_revision(tmp_path)
    fields = {"repo_type": "model", "repo_id": "org/model", "ref": "main", "commit": COMMIT}
    fields.update(change)
    bad = oci.RevisionContent(
        fields["repo_type"], fields["repo_id"], fields["ref"], fields["commit"], rev.files, {}
    )
    with pytest.raises(BundleError, match=message):
        export(tmp_path / "b.tar", [bad], key)


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a\\b", "a//b", "C:x"])
def test_export_refuses_an_unsafe_file_path(tmp_path: Path, key: SigningKey, path: str) -> None:
    bad = revision([source_file(tmp_path, path, b"x")])
    with pytest.raises(BundleError, match="path"):
        export(tmp_path / "b.tar", [bad], key)


def test_export_refuses_state_over_its_bound(tmp_path: Path, key: SigningKey) -> None:
    rev = revision(model_revision(tmp_path).files, state={"big": "x" * 2000})
    with pytest.raises(BundleError, match="state of model/org/model@main is"):
        bundle.export_bundle(
            tmp_path / "b.tar",
            [rev],
            key,
            created=CREATED,
            limits=oci.Limits(max_state_bytes=1000),
        )


def test_export_refuses_a_split_below_a_tar_block(tmp_path: Path, key: SigningKey) -> None:
    with pytest.raises(BundleError, match="below one tar block"):
        export(tmp_path / "b.tar", [model_revision(tmp_path)], key, split=100)


@pytest.mark.parametrize(
    ("state", "message"),
    [({"x": float("nan")}, "not JSON"), ({"x": {1, 2}}, "not JSON"), ({"x": [[[[]]]]}, "nested")],
    ids=["nan", "set", "deep"],
)
def test_export_refuses_state_a_reader_would_refuse(
    tmp_path: Path, key: SigningKey, state: dict[str, Any], message: str
) -> None:
    rev = revision(model_revision(tmp_path).files, state=state)
    with pytest.raises(BundleError, match=message):
        bundle.export_bundle(
            tmp_path / "b.tar", [rev], key, created=CREATED, limits=oci.Limits(max_json_depth=4)
        )


def test_export_reports_progress_of_every_file_byte(tmp_path: Path, key: SigningKey) -> None:
    rev = model_revision(tmp_path)
    seen: list[int] = []
    export(tmp_path / "b.tar", [rev], key, progress=seen.append)
    assert sum(seen) == sum(f.size for f in rev.files)


def test_import_checks_blobs_the_caller_left_unread(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    rev = model_revision(tmp_path)
    export(tmp_path / "b.tar", [rev], key)
    data = bytearray((tmp_path / "b.tar").read_bytes())
    weights = rev.files[0].source.read_bytes()
    data[data.index(weights) + 10] ^= 0xFF
    (tmp_path / "b.tar").write_bytes(bytes(data))
    with bundle.VerifiedBundle(tmp_path / "b.tar", trusted) as verified:
        blobs = verified.blobs()
        next(blobs)  # the caller skips reading it
        with pytest.raises(BundleError, match="does not hash to its digest"):
            next(blobs)


def test_import_checks_a_blob_the_caller_read_only_in_part(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    rev = model_revision(tmp_path)
    export(tmp_path / "b.tar", [rev], key)
    data = bytearray((tmp_path / "b.tar").read_bytes())
    weights = rev.files[0].source.read_bytes()
    data[data.index(weights) + len(weights) - 1] ^= 0xFF
    (tmp_path / "b.tar").write_bytes(bytes(data))
    with bundle.VerifiedBundle(tmp_path / "b.tar", trusted) as verified:
        blobs = verified.blobs()
        next(next(blobs).chunks(chunk_size=16))  # reads 16 bytes, then moves on
        with pytest.raises(BundleError, match="does not hash to its digest"):
            next(blobs)


def test_importing_the_same_bundle_twice_gives_the_same_files(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    export(tmp_path / "b.tar", [model_revision(tmp_path)], key)
    _, first = _import(tmp_path / "b.tar", trusted, tmp_path / "in")
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    _, second = _import(tmp_path / "b.tar", trusted, tmp_path / "in")
    assert first == second
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == snapshot
