"""Bundles an attacker (or a damaged medium) made: each is refused with a clear BundleError, and
nothing unverified is delivered."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.airgap import bundle, oci, tarstream
from proxy.airgap.errors import BundleError, SignatureError
from proxy.airgap.keys import SigningKey, TrustedKey
from tests.airgap.factories import (
    dumps,
    export,
    forge_model_manifest,
    members_of,
    model_revision,
    put_blob,
    read_json,
    tar_of_layout,
    write_tar,
)


def _import_all(path: Path, trusted: list[TrustedKey], into: Path) -> list[str]:
    into.mkdir(exist_ok=True)
    with bundle.VerifiedBundle(path, trusted) as verified:
        return verified.extract(into)


@pytest.fixture
def layout(tmp_path: Path, key: SigningKey) -> Path:
    """A directory bundle of one small model revision."""
    export(tmp_path / "layout", [model_revision(tmp_path)], key, directory=True)
    return tmp_path / "layout"


@pytest.fixture
def tar(tmp_path: Path, key: SigningKey) -> Path:
    export(tmp_path / "b.tar", [model_revision(tmp_path)], key)
    return tmp_path / "b.tar"


def _largest_blob(layout: Path) -> Path:
    return max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)


def _members(tar: Path) -> list[tuple[str, bytes]]:
    return members_of(tar)


def _retar(tar: Path, out: Path, edit: Callable[[list[Any]], list[Any]]) -> Path:
    return write_tar(out, edit(_members(tar)))


# -- altered content --------------------------------------------------------------------------


def test_flipped_byte_in_a_file_blob_of_a_tar_is_refused_and_not_delivered(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    data = bytearray(tar.read_bytes())
    members = _members(tar)
    name, content = max(members, key=lambda m: len(m[1]))
    data[data.index(content) + len(content) // 2] ^= 0x01
    tar.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name.rsplit('/')[-1]} does not hash to its digest"):
        _import_all(tar, trusted, tmp_path / "in")
    assert list((tmp_path / "in").iterdir()) == []


def test_flipped_byte_in_a_file_blob_of_a_directory_is_refused(
    tmp_path: Path, layout: Path, trusted: list[TrustedKey]
) -> None:
    blob = _largest_blob(layout)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0x80
    blob.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not hash to its digest"):
        _import_all(layout, trusted, tmp_path / "in")
    assert list((tmp_path / "in").iterdir()) == []


def test_flipped_byte_in_a_manifest_is_refused_before_any_file(
    tmp_path: Path, layout: Path, trusted: list[TrustedKey]
) -> None:
    index = read_json(layout / "index.json")
    manifest = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest.write_bytes(manifest.read_bytes().replace(b"org/model", b"org/modem"))
    with pytest.raises(BundleError, match="does not hash to its digest"):
        bundle.VerifiedBundle(layout, trusted)


def test_forged_manifest_no_longer_matches_the_signature(
    tmp_path: Path, layout: Path, trusted: list[TrustedKey]
) -> None:
    evil = put_blob(layout, b"import os; os.system('id')\n")

    def swap_weights(manifest: dict[str, Any]) -> None:
        manifest["layers"][0]["digest"] = f"sha256:{evil}"
        manifest["layers"][0]["size"] = 27

    def fix_config(layout: Path) -> None:  # keep modelfs consistent, as a careful forger would
        index = read_json(layout / "index.json")
        entry = next(e for e in index["manifests"] if e["artifactType"] == oci.MODEL_ARTIFACT_TYPE)
        path = layout / "blobs" / "sha256" / entry["digest"][7:]
        manifest = read_json(path)
        config = read_json(layout / "blobs" / "sha256" / manifest["config"]["digest"][7:])
        config["modelfs"]["diffIds"] = [layer["digest"] for layer in manifest["layers"]]
        data = dumps(config)
        manifest["config"].update(digest=f"sha256:{put_blob(layout, data)}", size=len(data))
        forge_model_manifest(layout, lambda m: m.update(config=manifest["config"]))

    forge_model_manifest(layout, swap_weights)
    fix_config(layout)
    with pytest.raises(SignatureError, match=r"does not match the bundle's content.*altered"):
        bundle.VerifiedBundle(layout, trusted)
    forged = tar_of_layout(layout, tmp_path / "forged.tar")
    with pytest.raises(SignatureError, match="does not match the bundle's content"):
        _import_all(forged, trusted, tmp_path / "in")
    assert list((tmp_path / "in").iterdir()) == []


def test_revision_dropped_from_index_is_refused(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    first = model_revision(tmp_path)
    second = model_revision(tmp_path, repo_id="org/other")
    export(tmp_path / "layout", [first, second], key, directory=True)
    index = read_json(tmp_path / "layout" / "index.json")
    index["manifests"] = [
        m for i, m in enumerate(index["manifests"]) if i not in (1, 3)
    ]  # org/other's model and state manifests
    (tmp_path / "layout" / "index.json").write_bytes(dumps(index))
    with pytest.raises(SignatureError, match="3 signed but absent"):
        bundle.VerifiedBundle(tmp_path / "layout", trusted)


def test_untrusted_key_is_refused_before_any_file(
    tmp_path: Path, tar: Path, key: SigningKey
) -> None:
    stranger = TrustedKey("other", ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(SignatureError, match="not trusted here"):
        bundle.VerifiedBundle(tar, [stranger])


def test_bundle_resigned_by_an_untrusted_key_is_refused(
    tmp_path: Path, trusted: list[TrustedKey]
) -> None:
    stranger = SigningKey(ec.generate_private_key(ec.SECP256R1()))
    export(tmp_path / "b.tar", [model_revision(tmp_path)], stranger)
    with pytest.raises(SignatureError, match="signed by a key that is not trusted here"):
        bundle.VerifiedBundle(tmp_path / "b.tar", trusted)


# -- hostile tar members ------------------------------------------------------------------------


def _first_two(tar: Path) -> list[tuple[str, bytes]]:
    return _members(tar)[:2]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../etc/cron.d/evil", "climbs out of the bundle"),
        ("blobs/sha256/../../../evil", "climbs out of the bundle"),
        ("/etc/passwd", "is absolute"),
        ("C:evil", "is absolute"),
        ("blobs\\sha256\\x", "backslash"),
        ("blobs/sha512/" + "a" * 128, 'not "oci-layout", "index.json" or "blobs/sha256/'),
        ("./index.json", 'not "oci-layout"'),
        ("extra.txt", 'not "oci-layout"'),
    ],
)
def test_member_name_outside_the_layout_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey], name: str, message: str
) -> None:
    members = _members(tar)
    hostile = write_tar(tmp_path / "h.tar", [*members[:2], (name, b"x"), *members[2:]])
    with pytest.raises(BundleError, match=message):
        _import_all(hostile, trusted, tmp_path / "in")
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (tarfile.SYMTYPE, "is a symbolic link"),
        (tarfile.LNKTYPE, "is a hard link"),
        (tarfile.CHRTYPE, "is a character device"),
        (tarfile.BLKTYPE, "is a block device"),
        (tarfile.FIFOTYPE, "is a FIFO"),
    ],
)
def test_link_or_device_member_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey], kind: bytes, message: str
) -> None:
    members: list[Any] = _members(tar)
    digest = members[2][0]
    special = tarfile.TarInfo(digest)
    special.type = kind
    special.linkname = "/etc/shadow"
    hostile = write_tar(tmp_path / "h.tar", [*members[:2], special, *members[3:]])
    with pytest.raises(BundleError, match=message):
        _import_all(hostile, trusted, tmp_path / "in")


def test_symlink_blob_in_a_directory_bundle_is_refused(
    tmp_path: Path, layout: Path, trusted: list[TrustedKey]
) -> None:
    blob = _largest_blob(layout)
    target = tmp_path / "elsewhere"
    shutil.move(blob, target)
    blob.symlink_to(target)
    with pytest.raises(BundleError, match="is a symbolic link"):
        _import_all(layout, trusted, tmp_path / "in")


def test_symlinked_blobs_folder_in_a_directory_bundle_is_refused(
    tmp_path: Path, layout: Path, trusted: list[TrustedKey]
) -> None:
    shutil.move(layout / "blobs" / "sha256", tmp_path / "real")
    (layout / "blobs" / "sha256").symlink_to(tmp_path / "real")
    with pytest.raises(BundleError, match='"blobs/sha256" is a symbolic link'):
        bundle.VerifiedBundle(layout, trusted)


@pytest.mark.parametrize("which", [0, 1, 2, -1], ids=["oci-layout", "index", "manifest", "file"])
def test_duplicate_member_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey], which: int
) -> None:
    members = _members(tar)
    hostile = write_tar(tmp_path / "h.tar", [*members, members[which]])
    with pytest.raises(BundleError, match="appears twice"):
        _import_all(hostile, trusted, tmp_path / "in")


def test_duplicate_of_the_last_file_with_other_bytes_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    members = _members(tar)
    name, data = members[-1]
    hostile = write_tar(tmp_path / "h.tar", [*members, (name, b"x" * len(data))])
    with pytest.raises(BundleError, match="appears twice"):
        _import_all(hostile, trusted, tmp_path / "in")


def test_file_blob_before_the_signature_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    members = _members(tar)
    hostile = write_tar(tmp_path / "h.tar", [*members[:3], members[-1], *members[3:-1]])
    with pytest.raises(BundleError, match="comes before the manifests and signature"):
        bundle.VerifiedBundle(hostile, trusted)


def test_unreferenced_member_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    stray = b"stray"
    name = f"blobs/sha256/{hashlib.sha256(stray).hexdigest()}"
    hostile = write_tar(tmp_path / "h.tar", [*_members(tar), (name, stray)])
    with pytest.raises(BundleError, match="not a file any manifest references"):
        _import_all(hostile, trusted, tmp_path / "in")


def test_index_json_first_is_refused(tmp_path: Path, tar: Path, trusted: list[TrustedKey]) -> None:
    members = _members(tar)
    hostile = write_tar(tmp_path / "h.tar", [members[1], members[0], *members[2:]])
    with pytest.raises(BundleError, match=r'must begin with "oci-layout" then "index.json"'):
        bundle.VerifiedBundle(hostile, trusted)


def test_member_size_differing_from_its_descriptor_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    members = _members(tar)
    name, data = members[-1]
    hostile = write_tar(tmp_path / "h.tar", [*members[:-1], (name, data + b"tail")])
    with pytest.raises(BundleError, match="its manifest says"):
        _import_all(hostile, trusted, tmp_path / "in")


def test_gnu_long_name_member_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    members = _members(tar)
    out = tmp_path / "h.tar"
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as hostile:
        for name, data in members[:2]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            hostile.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("blobs/sha256/" + "a" * 64 + "/" + "b" * 100)
        hostile.addfile(info, io.BytesIO(b""))
    with pytest.raises(BundleError, match="GNU long-name record"):
        bundle.VerifiedBundle(out, trusted)


def test_oversize_pax_header_is_refused_without_reading_it(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    members = _members(tar)
    out = tmp_path / "h.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as hostile:
        for name, data in members[:2]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            hostile.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(members[2][0])
        info.pax_headers = {"comment": "x" * (tarstream.MAX_PAX_BYTES + 1)}
        hostile.addfile(info, io.BytesIO(b""))
    with pytest.raises(BundleError, match=r"a pax header of .* bytes"):
        bundle.VerifiedBundle(out, trusted)


def test_corrupt_tar_header_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    data = bytearray(tar.read_bytes())
    data[512 + 512 + 10] ^= 0x01  # inside index.json's header name field
    tar.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="bad checksum"):
        bundle.VerifiedBundle(tar, trusted)


# -- truncated, trimmed, split ----------------------------------------------------------------


def test_truncated_tail_is_refused_and_the_cut_file_not_delivered(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    data = tar.read_bytes()
    last_name, last = _members(tar)[-1]
    tar.write_bytes(data[: data.index(last) + len(last) // 2])
    with pytest.raises(BundleError, match="truncated"):
        _import_all(tar, trusted, tmp_path / "in")
    assert last_name.rsplit("/")[-1] not in {p.name for p in (tmp_path / "in").iterdir()}
    assert not [p for p in (tmp_path / "in").iterdir() if p.name.endswith(".partial")]


def test_tail_cut_at_a_member_boundary_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    data = tar.read_bytes()
    _, last = _members(tar)[-1]
    end = data.index(last) + len(last)
    tar.write_bytes(data[: end + (-end % 512)])
    with pytest.raises(BundleError, match="without the tar end-of-archive"):
        _import_all(tar, trusted, tmp_path / "in")


def test_bundle_truncated_inside_its_metadata_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    tar.write_bytes(tar.read_bytes()[:3000])
    with pytest.raises(BundleError, match="truncated"):
        bundle.VerifiedBundle(tar, trusted)


def test_file_dropped_but_not_declared_omitted_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    trimmed = _retar(tar, tmp_path / "t.tar", lambda members: members[:-1])
    with pytest.raises(BundleError, match=r"missing from the bundle .* does not declare omitted"):
        _import_all(trimmed, trusted, tmp_path / "in")


def test_file_missing_from_a_directory_bundle_is_refused(
    tmp_path: Path, layout: Path, trusted: list[TrustedKey]
) -> None:
    _largest_blob(layout).unlink()
    with pytest.raises(BundleError, match="does not declare omitted"):
        _import_all(layout, trusted, tmp_path / "in")


def test_data_after_the_end_of_archive_is_refused(
    tmp_path: Path, tar: Path, trusted: list[TrustedKey]
) -> None:
    tar.write_bytes(tar.read_bytes() + b"\x00" * 1024 + b"appended")
    with pytest.raises(BundleError, match="data follows the tar end-of-archive"):
        _import_all(tar, trusted, tmp_path / "in")


def test_split_bundle_with_a_missing_middle_part_is_refused(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    parts = export(tmp_path / "b.tar", [model_revision(tmp_path)], key, split=4096).paths
    parts[1].unlink()
    with pytest.raises(BundleError, match=r"part b.tar.001 of the split bundle is missing"):
        bundle.VerifiedBundle(tmp_path / "b.tar", trusted)


def test_split_bundle_with_a_missing_last_part_is_refused(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    parts = export(tmp_path / "b.tar", [model_revision(tmp_path)], key, split=4096).paths
    last_with_data = max(i for i, p in enumerate(parts) if p.read_bytes().strip(b"\x00"))
    for part in parts[last_with_data:]:  # parts of end-of-archive zeros only are not needed
        part.unlink()
    with pytest.raises(BundleError, match="truncated"):
        _import_all(tmp_path / "b.tar", trusted, tmp_path / "in")


def test_split_bundle_opened_by_a_later_part_says_which_to_give(
    tmp_path: Path, key: SigningKey, trusted: list[TrustedKey]
) -> None:
    export(tmp_path / "b.tar", [model_revision(tmp_path)], key, split=4096)
    with pytest.raises(BundleError, match=r"not the first part .* give the .000 part"):
        bundle.VerifiedBundle(tmp_path / "b.tar.001", trusted)


def test_missing_bundle_says_so(tmp_path: Path, trusted: list[TrustedKey]) -> None:
    with pytest.raises(BundleError, match="no bundle at"):
        bundle.VerifiedBundle(tmp_path / "nowhere.tar", trusted)


# -- hostile JSON and structure ---------------------------------------------------------------


def _rewrite_index(layout: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    index = read_json(layout / "index.json")
    change(index)
    (layout / "index.json").write_bytes(dumps(index))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 50 + b"]" * 50, "nested deeper than 32"),
        (b'{"schemaVersion": 2, "schemaVersion": 2}', "appears twice"),
        (b'{"schemaVersion": NaN}', "NaN is not JSON"),
        (b"\xef\xbb\xbf{}", "not an OCI image index|not acceptable JSON"),
        (b'{"schemaVersion": 2, "manifests": []}', "lists no manifest: the bundle is empty"),
        (b'{"schemaVersion": 1, "manifests": []}', "schemaVersion 2"),
    ],
    ids=["deep", "duplicate-key", "nan", "bom", "empty", "schema-1"],
)
def test_hostile_index_json_is_refused(
    layout: Path, trusted: list[TrustedKey], content: bytes, message: str
) -> None:
    (layout / "index.json").write_bytes(content)
    with pytest.raises(BundleError, match=message):
        bundle.VerifiedBundle(layout, trusted)


def test_oversize_index_json_is_refused(layout: Path) -> None:
    (layout / "index.json").write_bytes(b" " * 2000 + b"{}")
    with pytest.raises(BundleError, match=r'"index.json" is 2002 bytes, more than the 1000'):
        oci.read_contents(layout, oci.Limits(max_index_bytes=1000))


def test_too_many_manifests_are_refused(layout: Path) -> None:
    with pytest.raises(BundleError, match="lists 3 manifests, more than the 2 allowed"):
        oci.read_contents(layout, oci.Limits(max_manifests=2))


def test_manifest_claiming_a_huge_size_is_refused_before_reading(layout: Path) -> None:
    _rewrite_index(layout, lambda index: index["manifests"][0].update(size=10**12))
    with pytest.raises(BundleError, match="more than the 4194304 allowed"):
        oci.read_contents(layout)


def test_nested_index_is_refused(layout: Path) -> None:
    _rewrite_index(
        layout,
        lambda index: index["manifests"][0].update(
            mediaType="application/vnd.oci.image.index.v1+json"
        ),
    )
    with pytest.raises(BundleError, match="nested indexes are not used"):
        oci.read_contents(layout)


def test_digest_of_another_algorithm_is_refused(layout: Path) -> None:
    _rewrite_index(layout, lambda index: index["manifests"][0].update(digest="sha512:" + "a" * 128))
    with pytest.raises(BundleError, match="bundles use sha256 only"):
        oci.read_contents(layout)


def test_bundle_without_a_signature_is_refused(layout: Path, trusted: list[TrustedKey]) -> None:
    _rewrite_index(layout, lambda index: index["manifests"].pop())
    with pytest.raises(BundleError, match="holds 0 signatures; it must hold exactly one"):
        bundle.VerifiedBundle(layout, trusted)


def test_manifest_layer_with_a_traversal_path_is_refused(layout: Path) -> None:
    forge_model_manifest(
        layout,
        lambda m: m["layers"][0]["annotations"].update({oci.FILEPATH_ANNOTATION: "../../x"}),
    )
    with pytest.raises(BundleError, match=r"has an empty, '\.' or '\.\.' segment"):
        oci.read_contents(layout)


def test_manifest_listing_one_path_twice_is_refused(layout: Path) -> None:
    def twice(manifest: dict[str, Any]) -> None:
        manifest["layers"][1]["annotations"] = dict(manifest["layers"][0]["annotations"])

    forge_model_manifest(layout, twice)
    with pytest.raises(BundleError, match="appears twice"):
        oci.read_contents(layout)


def test_compressed_layer_is_refused(layout: Path) -> None:
    forge_model_manifest(
        layout,
        lambda m: m["layers"][0].update(mediaType="application/vnd.cncf.model.weight.v1.tar+gzip"),
    )
    with pytest.raises(BundleError, match="carry files uncompressed"):
        oci.read_contents(layout)


def test_state_manifest_pointing_elsewhere_is_refused(layout: Path) -> None:
    index = read_json(layout / "index.json")
    entry = next(e for e in index["manifests"] if e["artifactType"] == oci.STATE_MEDIA_TYPE)
    path = layout / "blobs" / "sha256" / entry["digest"][7:]
    manifest = read_json(path)
    manifest["subject"]["digest"] = "sha256:" + "e" * 64
    data = dumps(manifest)
    entry.update(digest=f"sha256:{put_blob(layout, data)}", size=len(data))
    (layout / "index.json").write_bytes(json.dumps(index).encode())
    with pytest.raises(BundleError, match="which is not a model manifest of the bundle"):
        oci.read_contents(layout)


def test_unknown_bundle_format_asks_for_an_upgrade(layout: Path) -> None:
    _rewrite_index(layout, lambda index: index["annotations"].update({oci.FORMAT_ANNOTATION: "2"}))
    with pytest.raises(BundleError, match="format 2; this Hubwarden reads format 1: upgrade"):
        oci.read_contents(layout)


def test_unknown_oci_layout_version_is_refused(layout: Path) -> None:
    (layout / "oci-layout").write_bytes(b'{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(BundleError, match=r'does not say imageLayoutVersion "1.0.0"'):
        oci.read_contents(layout)
