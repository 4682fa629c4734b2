"""The state a bundle carries beside each manifest: written by export, parsed by import as
hostile input and checked against its (signed) manifest."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from proxy.airgap.errors import BundleError
from proxy.airgap.oci import DOC_MEDIA_TYPE, WEIGHT_MEDIA_TYPE, Layer, RevisionEntry
from proxy.airgap.state import Decision, RevisionState, StateFile, StateRef, Withheld, parse
from proxy.metadata import EntryType, LfsInfo, RefKind, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.models import BlobState
from proxy.store.repository import PinRecord
from scanners.report import Finding, Outcome, Severity

COMMIT = "1" * 40
OLDER = "2" * 40
WEIGHTS_SHA = "a" * 64
README_SHA = "b" * 64
README_OID = "c" * 40
PICKLE_OID = "d" * 40


def make_state() -> RevisionState:
    tree = (  # sorted by path, as parsed
        TreeEntry(EntryType.FILE, "README.md", README_OID, 7),
        TreeEntry(EntryType.FILE, "evil.bin", PICKLE_OID, 29),
        TreeEntry(EntryType.DIRECTORY, "sub", "e" * 40, 0),
        TreeEntry(
            EntryType.FILE, "sub/model.safetensors", "f" * 40, 100, LfsInfo(WEIGHTS_SHA, 100, 134)
        ),
    )
    finding = Finding("safetensors", "HEADER_OK", Severity.INFO, Outcome.CLEAN, "fine")
    decision = Decision("2026-01-01T00:00:00Z", "token:alice", "review.released", {"comment": "ok"})
    return RevisionState(
        repo=RepoRef(RepoType.MODEL, "org/model"),
        private=False,
        gated="manual",
        commit=COMMIT,
        ref=StateRef("main", RefKind.BRANCH, COMMIT),
        info={"id": "org/model", "sha": COMMIT},
        tree=tree,
        history=(COMMIT, OLDER),
        items={COMMIT: {"id": COMMIT, "title": "b"}, OLDER: {"id": OLDER, "title": "a"}},
        files=(
            StateFile("README.md", README_SHA, README_OID, 7, "text", ()),
            StateFile(
                "sub/model.safetensors",
                WEIGHTS_SHA,
                WEIGHTS_SHA,
                100,
                "safetensors",
                (finding,),
                (decision,),
            ),
        ),
        withheld=(Withheld("evil.bin", PICKLE_OID, 29, BlobState.REJECTED, "os.system"),),
        pins=(PinRecord("sub/model.safetensors", WEIGHTS_SHA, OLDER),),
        decisions=(decision,),
    )


def entry_of(state: RevisionState, ref: str = "main") -> RevisionEntry:
    layers = (
        Layer("README.md", README_SHA, 7, DOC_MEDIA_TYPE),
        Layer("sub/model.safetensors", WEIGHTS_SHA, 100, WEIGHT_MEDIA_TYPE),
    )
    return RevisionEntry("model", "org/model", ref, COMMIT, "0" * 64, layers, state.to_json())


def test_state_written_then_parsed_is_the_same() -> None:
    state = make_state()
    assert parse(state.to_json(), entry_of(state)) == state


def test_state_of_a_commit_revision_has_no_ref() -> None:
    state = make_state()
    bare = RevisionState(
        **{**{f: getattr(state, f) for f in state.__dataclass_fields__}, "ref": None}
    )
    assert parse(bare.to_json(), entry_of(bare, ref=COMMIT)).ref is None


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = state
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        index = int(last) if isinstance(target, list) else last
        if value is KeyError:
            del target[index]
        else:
            target[index] = value

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_set("format", 2), "this Hubwarden reads format 1"),
        (_set("repo.id", "org/other"), "another repo"),
        (_set("repo.id", "../etc"), "repo id"),
        (_set("commit", OLDER), "names commit"),
        (_set("ref.name", "dev"), "another ref"),
        (_set("repo.gated", "yes"), "is not one of"),
        (_set("info.sha", OLDER), "the repo info is of commit"),
        (_set("tree.0.path", "../x"), "path"),
        (_set("tree.1.path", "README.md"), "lists README.md twice"),
        (_set("tree.3.size", -1), "is not a size"),
        (_set("history", [OLDER, COMMIT]), "must start at the commit"),
        (_set("history", [COMMIT, COMMIT]), "must start at the commit"),
        (_set(f"commits.{OLDER}", KeyError), "not exactly those of the history"),
        (_set(f"commits.{OLDER}.id", COMMIT), "does not name it"),
        (_set("files.1.sha256", "c" * 64), "is not the layer of that path"),
        (_set("files.0.path", "other.md"), "not exactly its manifest's layers"),
        (_set("files.0.etag", "9" * 40), "is not a file of the commit's tree"),
        (_set("files.1.findings.0.outcome", "fine"), "is not a valid Outcome"),
        (_set("withheld.0.path", "README.md"), "withheld file README.md is carried"),
        (_set("withheld.0.state", "released"), "quarantined or rejected"),
        (_set("pins.0.commit", "HEAD"), "malformed"),
        (_set("decisions.0.details", "x"), "is not a JSON object"),
    ],
)
def test_state_malformed_or_inconsistent_is_refused(
    change: Callable[[dict[str, Any]], None], says: str
) -> None:
    state = make_state()
    document: Any = copy.deepcopy(state.to_json())
    change(document)
    with pytest.raises(BundleError, match=None) as refused:
        parse(document, entry_of(state))
    assert says in refused.value.message


def test_state_lfs_file_whose_layer_is_other_bytes_is_refused() -> None:
    state = make_state()
    document: Any = copy.deepcopy(state.to_json())
    lfs = next(e for e in document["tree"] if e["path"] == "sub/model.safetensors")["lfs"]
    lfs["oid"] = "9" * 64
    next(f for f in document["files"] if f["path"] == "sub/model.safetensors")["etag"] = "9" * 64
    with pytest.raises(BundleError, match=r"has sha256 9{12}"):
        parse(document, entry_of(state))
