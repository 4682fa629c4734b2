"""Without a database: which paths are pinned, and the held message."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from proxy.lifecycle import BlobLifecycle
from proxy.store.blobs import BlobStore
from proxy.store.repository import Repository
from proxy.trust.blocks import Blocks
from proxy.trust.pins import Pins
from scanners.report import Finding, Outcome, ScanReport, Severity

DEFAULT_UNPINNED = ("*.md", ".gitattributes")


def _finding(outcome: Outcome, message: str = "m", severity: Severity = Severity.HIGH) -> Finding:
    return Finding("test", f"CODE_{outcome.value.upper()}", severity, outcome, message)


def _report(*outcomes: Outcome) -> ScanReport:
    findings = tuple(_finding(o, f"finding {i}") for i, o in enumerate(outcomes))
    return ScanReport("f", "pickle", 1, findings, {"test": "1"}, 0.0)


def _pins(unpinned: tuple[str, ...] = DEFAULT_UNPINNED) -> Pins:
    # is_pinned_path never touches the database: an unbound session maker.
    return Pins(Repository(async_sessionmaker()), unpinned)


def _lifecycle(contact: str = "sec@example") -> BlobLifecycle:
    repository = Repository(async_sessionmaker())
    return BlobLifecycle(
        repository, BlobStore(Path("unused")), Blocks(repository, contact), contact
    )


@pytest.mark.parametrize(
    "path",
    ["model.safetensors", "config.json", "sub/model.bin", "README.MD", "docs.md/weights.bin",
     ".gitattributes.bak"],
)  # fmt: skip
def test_pins_is_pinned_path_weights_and_configs_are_pinned(path: str) -> None:
    assert _pins().is_pinned_path(path)


@pytest.mark.parametrize("path", ["README.md", "docs/guide.md", "a/b/c/NOTES.md", ".gitattributes",
                                  "sub/.gitattributes"])  # fmt: skip
def test_pins_is_pinned_path_documentation_is_not_pinned(path: str) -> None:
    assert not _pins().is_pinned_path(path)


def test_pins_is_pinned_path_folder_glob_unpins_everything_below() -> None:
    gate = _pins(unpinned=("docs/*",))
    assert not gate.is_pinned_path("docs/a/b.bin")
    assert gate.is_pinned_path("model/docs/a.bin")


def test_pins_is_pinned_path_without_patterns_pins_everything() -> None:
    assert _pins(unpinned=()).is_pinned_path("README.md")


def test_lifecycle_held_message_names_file_reason_review_and_contact() -> None:
    message = _lifecycle().held_message("model.bin", "pickle imports os.system", 81)
    assert message == (
        "held in quarantine: model.bin (pickle imports os.system); review 81; ask sec@example; "
        "see /held/81"
    )


def test_lifecycle_held_message_links_the_public_url_and_appends_the_notice() -> None:
    repository = Repository(async_sessionmaker())
    lifecycle = BlobLifecycle(
        repository,
        BlobStore(Path("unused")),
        Blocks(repository, "sec@example"),
        "sec@example",
        public_url="https://hub.example/",
        notice="process: https://wiki.example/models",
    )
    assert lifecycle.held_message("m.bin", "r", 7).endswith(
        "; see https://hub.example/held/7; process: https://wiki.example/models"
    )


def test_lifecycle_held_message_escapes_the_path() -> None:
    assert "a\\nb" in _lifecycle().held_message("a\nb", "r", None)
