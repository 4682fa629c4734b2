"""The risk card's pure core (`proxy.trust.risk`), its licence table (`proxy.trust.licences`) and
its reading of the Hub's own scan results (`proxy.trust.hub_scans`): facts in, ratings out."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from proxy.repos import RepoRef, RepoType
from proxy.trust.hub_scans import (
    HubFileStatus,
    HubVerdict,
    disagreement,
    file_status,
    hub_finding,
    merged,
    repo_status,
)
from proxy.trust.licences import LicenceClass, classify_hub_id, classify_text, is_licence_file
from proxy.trust.risk import (
    Account,
    DimensionName,
    FormatKind,
    LicenceFile,
    PublisherFacts,
    Rating,
    RepoFile,
    RiskFacts,
    SignatureStatus,
    TimelinessFacts,
    assess,
    format_kind,
)
from scanners.report import JsonValue, Outcome, Severity

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
COMMIT = "a" * 40
NEWER = "b" * 40
APACHE_TEXT = "                                 Apache License\n   Version 2.0, January 2004\n"


def _facts(**changes: object) -> RiskFacts:
    """A repo low in every dimension; a test changes one thing."""
    base = RiskFacts(
        repo=RepoRef(RepoType.MODEL, "org/m"),
        revision="main",
        commit=COMMIT,
        now=NOW,
        offline=False,
        private=False,
        gated="false",
        card_licence="apache-2.0",
        licence_files=(),
        files=(
            RepoFile("config.json", 600, "released", "json", "clean"),
            RepoFile("model.safetensors", 10_000, "released", "safetensors", "clean"),
        ),
        complete_tree=True,
        auto_map=False,
        publisher=PublisherFacts(
            "org", Account("organisation", True, NOW - dt.timedelta(days=900)), True
        ),
        timeliness=TimelinessFacts(
            COMMIT, NOW - dt.timedelta(days=10), COMMIT, NOW, 0, NOW - dt.timedelta(days=10)
        ),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _rating(facts: RiskFacts, name: DimensionName) -> tuple[Rating, str]:
    card = assess(facts)
    (found,) = [d for d in card.dimensions if d.name is name]
    return found.rating, found.summary


def test_assess_clean_repo_is_low_in_every_dimension() -> None:
    card = assess(_facts())
    assert [d.rating for d in card.dimensions] == [Rating.LOW] * 5
    assert card.overall is Rating.LOW and not card.exceeds_policy


@pytest.mark.parametrize(
    ("private", "gated", "expected"),
    [(False, "false", Rating.LOW), (False, "auto", Rating.MEDIUM),
     (False, "manual", Rating.HIGH), (True, "false", Rating.HIGH)],
)  # fmt: skip
def test_assess_access_control_by_visibility_and_gating(
    private: bool, gated: str, expected: Rating
) -> None:
    rating, _ = _rating(_facts(private=private, gated=gated), DimensionName.ACCESS)
    assert rating is expected


@pytest.mark.parametrize(
    ("licence", "expected"),
    [("mit", Rating.LOW), ("gpl-3.0", Rating.MEDIUM), ("cc-by-nc-4.0", Rating.HIGH),
     ("llama3", Rating.HIGH), ("other", Rating.HIGH), (None, Rating.HIGH),
     ("made-up-licence", Rating.HIGH)],
)  # fmt: skip
def test_assess_licence_by_class(licence: str | None, expected: Rating) -> None:
    rating, _ = _rating(_facts(card_licence=licence), DimensionName.LICENCE)
    assert rating is expected


def test_assess_licence_file_contradicting_the_card_is_at_least_medium() -> None:
    gpl = classify_text("LICENSE", "GNU GENERAL PUBLIC LICENSE\n Version 3, 29 June 2007")
    rating, summary = _rating(
        _facts(licence_files=(LicenceFile("LICENSE", gpl),)), DimensionName.LICENCE
    )
    assert rating is Rating.MEDIUM and "LICENSE reads as copyleft" in summary


def test_assess_licence_only_in_a_file_is_classified_from_its_text() -> None:
    apache = classify_text("LICENSE", APACHE_TEXT)
    card = assess(_facts(card_licence=None, licence_files=(LicenceFile("LICENSE", apache),)))
    (dimension,) = [d for d in card.dimensions if d.name is DimensionName.LICENCE]
    assert dimension.rating is Rating.MEDIUM  # the card is silent
    assert dimension.facts["spdx"] == "Apache-2.0"


def test_assess_pickle_weights_only_are_high_with_their_share() -> None:
    files = (RepoFile("pytorch_model.bin", 10_000, "released", "pytorch-zip", "clean"),)
    card = assess(_facts(files=files))
    (dimension,) = [d for d in card.dimensions if d.name is DimensionName.FORMAT]
    assert dimension.rating is Rating.HIGH
    assert dimension.facts["pickle_bearing_share_of_bytes"] == 1.0
    assert dimension.facts["pickle_bearing_files"] == ["pytorch_model.bin"]


def test_assess_pickle_beside_safetensors_is_medium() -> None:
    files = (
        RepoFile("model.safetensors", 10_000, "released", "safetensors", "clean"),
        RepoFile("training_args.bin", 100, "released", "pickle", "clean"),
    )
    rating, summary = _rating(_facts(files=files), DimensionName.FORMAT)
    assert rating is Rating.MEDIUM and "1 pickle-bearing" in summary


@pytest.mark.parametrize(
    "change",
    [{"auto_map": True},
     {"files": (RepoFile("modeling_x.py", 100, "released", "python", "review"),)},
     {"files": (RepoFile("evil.pkl", 9, "rejected", "pickle", "malicious", Severity.CRITICAL,
                         "PICKLE_GLOBAL_DENIED: os.system"),)}],
)  # fmt: skip
def test_assess_remote_code_or_a_held_file_is_high(change: dict[str, object]) -> None:
    rating, _ = _rating(_facts(**change), DimensionName.FORMAT)
    assert rating is Rating.HIGH


def test_format_kind_before_fetching_goes_by_name_and_after_by_format() -> None:
    assert format_kind(RepoFile("pytorch_model.bin", 1)) is FormatKind.PICKLE
    assert format_kind(RepoFile("model.gguf", 1)) is FormatKind.SAFE
    assert format_kind(RepoFile("openvino.bin", 1, "released", "opaque")) is FormatKind.NOT_MODEL
    plain = RepoFile("a.npy", 1, "released", "numpy")
    assert format_kind(plain) is FormatKind.OTHER
    pickled = dataclasses.replace(plain, codes=("PICKLE_GLOBAL_UNKNOWN",))
    assert format_kind(pickled) is FormatKind.PICKLE


@pytest.mark.parametrize(
    ("publisher", "expected"),
    [(PublisherFacts("org", Account("organisation", False), True), Rating.MEDIUM),
     (PublisherFacts("bob", Account("user", None, NOW - dt.timedelta(days=10)), True),
      Rating.HIGH),
     (PublisherFacts("ghost", None, True), Rating.HIGH),
     (PublisherFacts("org", None, False), Rating.MEDIUM),
     (PublisherFacts("bob", Account("user"), True, allow_listed=True), Rating.LOW),
     (PublisherFacts("org", Account("organisation", True), True, denied=True), Rating.HIGH),
     (PublisherFacts("org", Account("organisation", True), True,
                     signature=SignatureStatus.INVALID), Rating.HIGH),
     (PublisherFacts("bob", Account("user"), True, signature=SignatureStatus.VERIFIED,
                     signer="bob@example.com"), Rating.LOW)],
)  # fmt: skip
def test_assess_publisher_traceability(publisher: PublisherFacts, expected: Rating) -> None:
    rating, _ = _rating(_facts(publisher=publisher), DimensionName.PUBLISHER)
    assert rating is expected


def test_assess_offline_publisher_says_unknown_offline() -> None:
    card = assess(_facts(offline=True, publisher=PublisherFacts("org", None, False)))
    (dimension,) = [d for d in card.dimensions if d.name is DimensionName.PUBLISHER]
    assert dimension.facts["kind"] == "unknown offline"
    assert dimension.facts["account"] == "unknown offline"


@pytest.mark.parametrize(
    ("timeliness", "expected"),
    [(TimelinessFacts(COMMIT, NOW - dt.timedelta(days=400), COMMIT, NOW, 0, None), Rating.MEDIUM),
     (TimelinessFacts(COMMIT, NOW - dt.timedelta(days=1200), COMMIT, NOW, 0, None), Rating.HIGH),
     (TimelinessFacts(COMMIT, NOW, NEWER, NOW, 2, NOW), Rating.MEDIUM),
     (TimelinessFacts(COMMIT, NOW, NEWER, NOW, 12, NOW), Rating.HIGH),
     (TimelinessFacts(COMMIT, NOW, None, None, None, None), Rating.MEDIUM)],
)  # fmt: skip
def test_assess_version_timeliness(timeliness: TimelinessFacts, expected: Rating) -> None:
    rating, _ = _rating(_facts(timeliness=timeliness), DimensionName.TIMELINESS)
    assert rating is expected


def test_assess_offline_unknown_head_rates_by_age_and_says_so() -> None:
    timeliness = TimelinessFacts(COMMIT, NOW - dt.timedelta(days=3), None, None, None, None)
    card = assess(_facts(offline=True, timeliness=timeliness))
    (dimension,) = [d for d in card.dimensions if d.name is DimensionName.TIMELINESS]
    assert dimension.rating is Rating.LOW
    assert dimension.facts["upstream_head"] == "unknown offline"


def test_assess_overall_is_the_worst_and_max_risk_is_compared() -> None:
    card = assess(_facts(gated="auto", max_risk=Rating.LOW))
    assert card.overall is Rating.MEDIUM and card.exceeds_policy
    assert card.to_json()["exceeds_policy"] is True


def test_assess_hub_flag_on_a_released_file_is_a_disagreement() -> None:
    flagged = HubFileStatus("model.safetensors", HubVerdict.UNSAFE, "pickle imports: dangerous")
    files = (RepoFile("model.safetensors", 10, "released", "safetensors", "clean", hub=flagged),)
    card = assess(_facts(files=files))
    (text,) = card.disagreements
    assert "the Hub reports it unsafe" in text and "released it" in text
    (dimension,) = [d for d in card.dimensions if d.name is DimensionName.FORMAT]
    assert dimension.rating is Rating.MEDIUM


# -- licences ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hub_id", "kind", "spdx"),
    [("apache-2.0", LicenceClass.PERMISSIVE, "Apache-2.0"), ("MIT", LicenceClass.PERMISSIVE, "MIT"),
     ("cc-by-nc-4.0", LicenceClass.RESTRICTED, "CC-BY-NC-4.0"),
     ("llama3", LicenceClass.RESTRICTED, None),
     ("agpl-3.0", LicenceClass.COPYLEFT, "AGPL-3.0-only"),
     ("nonsense", LicenceClass.UNKNOWN, None)],
)  # fmt: skip
def test_classify_hub_id(hub_id: str, kind: LicenceClass, spdx: str | None) -> None:
    found = classify_hub_id(hub_id)
    assert (found.kind, found.spdx) == (kind, spdx)


def test_classify_text_of_a_llama_licence_is_restricted() -> None:
    found = classify_text("LICENSE", "META LLAMA 3 COMMUNITY LICENSE AGREEMENT\n...")
    assert found.kind is LicenceClass.RESTRICTED


@pytest.mark.parametrize(
    ("path", "expected"),
    [("LICENSE", True), ("LICENSE.txt", True), ("docs/LICENCE-MODEL", True), ("COPYING", True),
     ("license_notes.py", False), ("README.md", False)],
)  # fmt: skip
def test_is_licence_file(path: str, expected: bool) -> None:
    assert is_licence_file(path) is expected


# -- the Hub's own scan --------------------------------------------------------------------------


def test_file_status_reads_status_and_scans() -> None:
    raw: JsonValue = {"status": "unsafe", "avScan": {"virusFound": False},
           "pickleImportScan": {"highestSafetyLevel": "dangerous", "imports": []}}  # fmt: skip
    found = file_status("x.bin", raw)
    assert found is not None and found.verdict is HubVerdict.UNSAFE
    assert found.detail == "antivirus: clean; pickle imports: dangerous"
    assert file_status("x.bin", "nonsense") is None


def test_repo_status_takes_paths_or_objects_and_merged_prefers_file_status() -> None:
    status = repo_status({"scansDone": True, "filesWithIssues": ["a.bin", {"path": "b.bin"}, 3]})
    assert status is not None and status.scans_done is True
    assert [f.path for f in status.flagged] == ["a.bin", "b.bin"]
    own = {"a.bin": HubFileStatus("a.bin", HubVerdict.CAUTION)}
    found = merged(status, own)
    assert found["a.bin"].verdict is HubVerdict.CAUTION and found["b.bin"].verdict.flags
    assert repo_status(None) is None


def test_hub_finding_never_decides() -> None:
    finding = hub_finding(HubFileStatus("x.bin", HubVerdict.UNSAFE), COMMIT)
    assert (finding.scanner, finding.severity, finding.outcome) == (
        "hub", Severity.INFO, Outcome.CLEAN,
    )  # fmt: skip
    assert finding.code == "HUB_UNSAFE"


def test_disagreement_both_ways_and_agreement() -> None:
    safe = HubFileStatus("x.bin", HubVerdict.SAFE)
    assert disagreement(safe, "quarantined", "review") is not None
    assert disagreement(safe, "released", "clean") is None
    assert disagreement(HubFileStatus("x.bin", HubVerdict.UNSAFE), "rejected", "malicious") is None
