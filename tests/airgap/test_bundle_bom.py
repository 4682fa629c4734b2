"""The AI-BOM inside a bundle (issue 11): one CycloneDX referrer per revision, covered by the
bundle's signature like the state; and `check_bom`, which holds the BOM the importer receives
against the files the bundle carries."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from proxy.airgap import bundle, oci
from proxy.airgap.boms import check_bom
from proxy.airgap.errors import BundleError, SignatureError
from proxy.airgap.judge import ImportRefused
from proxy.airgap.keys import SigningKey, TrustedKey
from proxy.airgap.state import RevisionState, StateFile
from proxy.metadata import EntryType, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.trust.bom import FileFacts, RevisionFacts, build_bom
from tests.airgap.factories import dumps, export, model_revision, put_blob, read_json

REPO = RepoRef.parse(RepoType.MODEL, "org/model")


def bom_of(content: oci.RevisionContent, **changed: str) -> bytes:
    """A real BOM of the revision's files (`changed`: path → another sha256 to list)."""
    files = [
        FileFacts(f.path, f.size, "0" * 40, None, "released", changed.get(f.path, f.sha256))
        for f in content.files
    ]
    facts = RevisionFacts(REPO, content.ref, content.commit, None, "apache-2.0", files)
    return build_bom(facts, tool_version="test").encode()


def with_bom(content: oci.RevisionContent, **changed: str) -> oci.RevisionContent:
    return dataclasses.replace(content, bom=bom_of(content, **changed))


def _boms(layout: Path) -> list[dict[str, Any]]:
    index = read_json(layout / "index.json")
    return [m for m in index["manifests"] if m["artifactType"] == oci.BOM_MEDIA_TYPE]


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


# -- in the layout, signed ----------------------------------------------------------------------


def test_bom_travels_as_a_signed_referrer_of_its_revision(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    content = with_bom(model_revision(tmp_path))
    layout = tmp_path / "bundle"
    export(layout, [content], key, directory=True)
    [entry] = _boms(layout)
    manifest = read_json(_blob_path(layout, entry["digest"]))
    model = next(
        m for m in read_json(layout / "index.json")["manifests"]
        if m["artifactType"] == oci.MODEL_ARTIFACT_TYPE
    )  # fmt: skip
    assert manifest["subject"]["digest"] == model["digest"]
    assert [layer["mediaType"] for layer in manifest["layers"]] == [oci.BOM_MEDIA_TYPE]
    with bundle.VerifiedBundle(layout, trusted) as verified:
        [revision] = verified.revisions
    assert revision.bom == content.bom
    text = (revision.bom or b"").decode()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    names = {s.name for s in oci.read_contents(layout).subjects}
    label = content.label
    assert {f"bom-manifest:{label}", f"bom:{label}"} <= names


def test_bundle_without_a_bom_still_reads(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    layout = tmp_path / "bundle"
    export(layout, [model_revision(tmp_path)], key, directory=True)
    assert _boms(layout) == []
    with bundle.VerifiedBundle(layout, trusted) as verified:
        assert verified.revisions[0].bom is None


def _replace_bom(layout: Path, data: bytes) -> None:
    """Put other BOM bytes in, with every digest that points at them made consistent: only
    the signature can tell."""
    index_path = layout / "index.json"
    index = read_json(index_path)
    entry = next(m for m in index["manifests"] if m["artifactType"] == oci.BOM_MEDIA_TYPE)
    manifest = read_json(_blob_path(layout, entry["digest"]))
    manifest["layers"][0].update(digest=f"sha256:{put_blob(layout, data)}", size=len(data))
    manifest_data = dumps(manifest)
    entry.update(digest=f"sha256:{put_blob(layout, manifest_data)}", size=len(manifest_data))
    index_path.write_bytes(dumps(index))


def test_altered_bom_is_refused_by_the_signature(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    content = with_bom(model_revision(tmp_path))
    layout = tmp_path / "bundle"
    export(layout, [content], key, directory=True)
    _replace_bom(layout, bom_of(content, **{"config.json": "0" * 64}))
    with pytest.raises(SignatureError, match="does not match the bundle's content"):
        bundle.VerifiedBundle(layout, trusted)


def test_dropped_bom_is_refused_by_the_signature(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    layout = tmp_path / "bundle"
    export(layout, [with_bom(model_revision(tmp_path))], key, directory=True)
    index = read_json(layout / "index.json")
    index["manifests"] = [m for m in index["manifests"] if m["artifactType"] != oci.BOM_MEDIA_TYPE]
    (layout / "index.json").write_bytes(dumps(index))
    with pytest.raises(SignatureError, match="signed but absent"):
        bundle.VerifiedBundle(layout, trusted)


def test_two_boms_for_one_revision_are_refused(tmp_path: Path, key: SigningKey) -> None:
    layout = tmp_path / "bundle"
    export(layout, [with_bom(model_revision(tmp_path))], key, directory=True)
    index = read_json(layout / "index.json")
    [entry] = [m for m in index["manifests"] if m["artifactType"] == oci.BOM_MEDIA_TYPE]
    manifest = read_json(_blob_path(layout, entry["digest"]))
    manifest["annotations"] = {"copy": "2"}
    data = dumps(manifest)
    index["manifests"].append({**entry, "digest": f"sha256:{put_blob(layout, data)}",
                               "size": len(data)})  # fmt: skip
    (layout / "index.json").write_bytes(dumps(index))
    with pytest.raises(BundleError, match="two BOM manifests"):
        oci.read_contents(layout)


def test_oversized_bom_is_not_exported(tmp_path: Path, key: SigningKey) -> None:
    content = with_bom(model_revision(tmp_path))
    with pytest.raises(BundleError, match="BOM of model/org/model@main is"):
        export(tmp_path / "b", [content], key, limits=oci.Limits(max_bom_bytes=100))


# -- check_bom: the BOM against the files --------------------------------------------------------


def state_of(content: oci.RevisionContent, *, extra_tree: tuple[str, ...] = ()) -> RevisionState:
    """The state an importer parses for `content`: a tree of its files (and `extra_tree`)."""
    paths = [f.path for f in content.files] + list(extra_tree)
    tree = tuple(TreeEntry(EntryType.FILE, p, "1" * 40, 1) for p in paths)
    files = tuple(StateFile(f.path, f.sha256, "1" * 40, f.size, "", ()) for f in content.files)
    return RevisionState(REPO, False, "false", content.commit, None, {}, tree, None, {}, files,
                         (), (), ())  # fmt: skip


def test_check_bom_accepts_the_bom_of_the_carried_files(tmp_path: Path) -> None:
    content = model_revision(tmp_path)
    data = bom_of(content)
    checked = check_bom(data, state_of(content))
    assert (checked.files, checked.hashed) == (len(content.files), len(content.files))
    assert checked.sha256 == hashlib.sha256(data).hexdigest()
    assert checked.serial.startswith("urn:uuid:")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("sha256", 'gives "config.json" sha256 000000000000'),
        ("commit", "not this revision"),
        ("stray", "which the commit's tree does not hold"),
        ("header", "is not a CycloneDX 1.6 document"),
        ("hash", 'gives "config.json" a malformed SHA-256'),
        ("shape", "a component's properties are not a list of objects"),
        ("json", "not acceptable JSON"),
    ],
)
def test_check_bom_refuses_a_bom_that_contradicts_the_bundle(
    tmp_path: Path, damage: str, says: str
) -> None:
    content = model_revision(tmp_path)
    state = state_of(content)
    data = bom_of(content)
    if damage == "sha256":
        data = bom_of(content, **{"config.json": "0" * 64})
    elif damage == "commit":
        state = dataclasses.replace(state, commit="f" * 40)
    elif damage == "stray":
        extra = dataclasses.replace(content.files[0], path="extra.bin")
        data = bom_of(dataclasses.replace(content, files=[*content.files, extra]))
    elif damage == "header":
        document = json.loads(data)
        document["specVersion"] = "1.4"
        data = json.dumps(document).encode()
    elif damage == "hash":
        document = json.loads(data)
        for component in document["metadata"]["component"]["components"]:
            if component["name"] == "config.json":
                component["hashes"][0]["content"] = "../" * 21 + "x"
        data = json.dumps(document).encode()
    elif damage == "shape":
        document = json.loads(data)
        document["metadata"]["component"]["components"][0]["properties"] = "path"
        data = json.dumps(document).encode()
    else:
        data = b'{"bomFormat": "CycloneDX", "bomFormat": "twice"}'
    with pytest.raises(ImportRefused, match="the bundle contradicts itself") as refused:
        check_bom(data, state)
    assert says in str(refused.value)
