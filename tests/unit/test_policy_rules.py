"""Policy rules without I/O (`proxy.trust.rules`) and where the policy comes from
(`proxy.trust.policy_source`: the `[policy]` section, a policy file, hot reload)."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from proxy.config import ConfigError, NewRepos, PolicySettings, RuleAction
from proxy.metadata import EntryType, TreeEntry
from proxy.repos import RepoRef, RepoType, Revision
from proxy.trust.policy_source import PolicySource
from proxy.trust.rules import (
    MODEL_FORMATS,
    PASSING_FORMATS,
    Policy,
    RuleHit,
    human_size,
    is_model_format,
)
from scanners import scan_file
from scanners.report import Finding, Outcome, ScanReport, Severity

REPO = RepoRef.parse(RepoType.MODEL, "org/model")
MAIN = Revision.parse("main")
GB = 1_000_000_000


def _policy(**settings: object) -> Policy:
    return Policy(PolicySettings(**settings))  # type: ignore[arg-type]


def _entry(path: str = "model.bin", size: int = 10) -> TreeEntry:
    return TreeEntry(EntryType.FILE, path, "0" * 40, size)


def _report(file_format: str, *findings: Finding) -> ScanReport:
    return ScanReport("f", file_format, 1, findings, {"test": "1"}, 0.0)


def _finding(code: str, outcome: Outcome, message: str = "m") -> Finding:
    return Finding("test", code, Severity.MEDIUM, outcome, message)


def _scanned(tmp_path: Path, name: str, content: bytes) -> ScanReport:
    path = tmp_path / name
    path.write_bytes(content)
    return scan_file(path, name=name)


def _safetensors(tmp_path: Path) -> ScanReport:
    path = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(path))
    return scan_file(path, name=path.name)


def _rules(hits: list[RuleHit]) -> list[str]:
    return [hit.rule for hit in hits]


# -- before_fetch: publishers ------------------------------------------------------------------


def test_before_fetch_denied_publisher_is_rejected_naming_the_rule() -> None:
    hits = _policy(deny_publishers=("evil-org/*",)).before_fetch(
        RepoRef.parse(RepoType.MODEL, "evil-org/llm"), MAIN, None
    )
    assert [(h.rule, h.action) for h in hits] == [("deny_publishers", RuleAction.REJECT)]
    assert hits[0].message == (
        'policy rule deny_publishers: model "evil-org/llm" matches the denied publisher '
        '"evil-org/*"'
    )


def test_before_fetch_deny_beats_allow() -> None:
    policy = _policy(allow_publishers=("org/*",), deny_publishers=("org/model",))
    assert _rules(policy.before_fetch(REPO, MAIN, None)) == ["deny_publishers"]


def test_before_fetch_publisher_outside_allow_list_is_rejected_listing_it() -> None:
    hits = _policy(allow_publishers=("google/*", "meta-llama/*")).before_fetch(REPO, MAIN, None)
    assert _rules(hits) == ["allow_publishers"]
    assert hits[0].action is RuleAction.REJECT
    assert hits[0].message == (
        'policy rule allow_publishers: model "org/model" is not from an allowed publisher '
        "(google/*, meta-llama/*)"
    )


def test_before_fetch_allow_list_matches_regardless_of_case() -> None:
    policy = _policy(allow_publishers=("Org/*",))
    assert policy.before_fetch(REPO, MAIN, None) == []


def test_before_fetch_deny_list_matches_regardless_of_case() -> None:
    policy = _policy(deny_publishers=("ORG/*",))
    assert _rules(policy.before_fetch(REPO, MAIN, None)) == ["deny_publishers"]


def test_before_fetch_empty_allow_list_lets_every_publisher_in() -> None:
    assert _policy().before_fetch(REPO, MAIN, _entry()) == []


# -- before_fetch: pull requests and size --------------------------------------------------------


def test_before_fetch_pull_request_refused_when_not_allowed() -> None:
    hits = _policy(allow_pull_requests=False).before_fetch(REPO, Revision.parse("refs/pr/3"), None)
    assert _rules(hits) == ["allow_pull_requests"]
    assert hits[0].action is RuleAction.REJECT
    assert 'policy rule allow_pull_requests: revision "refs/pr/3" is a pull request' in (
        hits[0].message
    )


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/convert/parquet", "a" * 40])
def test_before_fetch_other_revisions_pass_when_pull_requests_refused(revision: str) -> None:
    policy = _policy(allow_pull_requests=False)
    assert policy.before_fetch(REPO, Revision.parse(revision), None) == []


def test_before_fetch_pull_request_passes_by_default() -> None:
    assert _policy().before_fetch(REPO, Revision.parse("refs/pr/3"), None) == []


def test_before_fetch_file_over_max_file_bytes_is_rejected_with_both_sizes() -> None:
    hits = _policy(max_file_bytes=GB).before_fetch(REPO, MAIN, _entry(size=3_200_000_000))
    assert _rules(hits) == ["max_file_bytes"]
    assert hits[0].message == (
        'policy rule max_file_bytes: "model.bin" is 3.2 GB (3200000000 bytes), more than the '
        "1.0 GB (1000000000 bytes) allowed"
    )


def test_before_fetch_file_of_exactly_max_file_bytes_passes() -> None:
    assert _policy(max_file_bytes=GB).before_fetch(REPO, MAIN, _entry(size=GB)) == []


def test_before_fetch_max_file_bytes_zero_means_no_limit() -> None:
    assert _policy(max_file_bytes=0).before_fetch(REPO, MAIN, _entry(size=10**15)) == []


def test_before_fetch_without_entry_skips_the_size_rule() -> None:
    assert _policy(max_file_bytes=1).before_fetch(REPO, MAIN, None) == []


def test_before_fetch_message_escapes_the_path() -> None:
    hits = _policy(max_file_bytes=1).before_fetch(REPO, MAIN, _entry("a\r\nb.bin", size=2))
    assert '"a\\r\\nb.bin"' in hits[0].message


# -- after_scan: allowed_formats -------------------------------------------------------------------


def test_after_scan_pickle_outside_allowed_formats_is_rejected(tmp_path: Path) -> None:
    report = _scanned(tmp_path, "model.pkl", pickle.dumps({"weights": [1.0, 2.0]}))
    hits = _policy(allowed_formats=("safetensors", "gguf")).after_scan(
        REPO, _entry("model.pkl"), report, new_repo=False
    )
    assert [(h.rule, h.action) for h in hits] == [("allowed_formats", RuleAction.REJECT)]
    assert hits[0].message == (
        'policy rule allowed_formats: "model.pkl" is pickle, not one of the allowed model '
        "formats (safetensors, gguf)"
    )


def test_after_scan_safetensors_in_allowed_formats_passes(tmp_path: Path) -> None:
    policy = _policy(allowed_formats=("safetensors",))
    hits = policy.after_scan(REPO, _entry("m.safetensors"), _safetensors(tmp_path), new_repo=False)
    assert hits == []


@pytest.mark.parametrize(
    ("name", "content"),
    [("README.md", b"# a model\n"), ("config.json", b'{"model_type": "bert"}')],
)
def test_after_scan_text_and_json_pass_any_allowed_formats(
    tmp_path: Path, name: str, content: bytes
) -> None:
    report = _scanned(tmp_path, name, content)
    policy = _policy(allowed_formats=("gguf",))
    assert policy.after_scan(REPO, _entry(name), report, new_repo=False) == []


@pytest.mark.parametrize("file_format", ["data", "opaque", "empty", "protobuf"])
def test_after_scan_data_formats_pass_any_allowed_formats(file_format: str) -> None:
    policy = _policy(allowed_formats=("gguf",))
    assert policy.after_scan(REPO, _entry(), _report(file_format), new_repo=False) == []


def test_after_scan_empty_allowed_formats_allows_every_format(tmp_path: Path) -> None:
    report = _scanned(tmp_path, "model.pkl", pickle.dumps({"a": 1}))
    assert _policy().after_scan(REPO, _entry("model.pkl"), report, new_repo=False) == []


def test_model_formats_hold_the_pickle_family_and_containers_not_text() -> None:
    for name in ("pickle", "pytorch-zip", "pytorch-legacy", "joblib", "numpy", "zip", "unknown"):
        assert name in MODEL_FORMATS
    assert not MODEL_FORMATS & PASSING_FORMATS
    assert {"text", "json", "data", "opaque"} <= PASSING_FORMATS


def test_is_model_format_a_name_it_does_not_know_is_a_model_format() -> None:
    assert is_model_format("brand-new-format")


def test_policy_unknown_allowed_format_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r'"allowed_formats" holds "safetensor", which is not'):
        _policy(allowed_formats=("safetensor",))


# -- after_scan: findings --------------------------------------------------------------------------


@pytest.mark.parametrize("action", [RuleAction.HOLD, RuleAction.REJECT])
def test_after_scan_remote_code_follows_remote_code(tmp_path: Path, action: RuleAction) -> None:
    report = _scanned(tmp_path, "modeling.py", b"import os\n\ndef f():\n    return 1\n")
    hits = _policy(remote_code=action).after_scan(
        REPO, _entry("modeling.py"), report, new_repo=False
    )
    assert [(h.rule, h.action) for h in hits] == [("remote_code", action)]
    assert hits[0].message.startswith('policy rule remote_code: "modeling.py" is remote code: ')


def test_after_scan_remote_code_allowed_gives_no_hit(tmp_path: Path) -> None:
    report = _scanned(tmp_path, "modeling.py", b"def f():\n    return 1\n")
    policy = _policy(remote_code=RuleAction.ALLOW)
    assert policy.after_scan(REPO, _entry("modeling.py"), report, new_repo=False) == []
    assert "remote_code" in policy.waived


@pytest.mark.parametrize("action", [RuleAction.HOLD, RuleAction.REJECT])
def test_after_scan_unknown_format_follows_unknown_formats(action: RuleAction) -> None:
    report = _report("unknown", _finding("FORMAT_UNKNOWN", Outcome.REVIEW))
    hits = _policy(unknown_formats=action).after_scan(REPO, _entry(), report, new_repo=False)
    assert [(h.rule, h.action) for h in hits] == [("unknown_formats", action)]
    assert hits[0].message.startswith('policy rule unknown_formats: "model.bin" is binary')


@pytest.mark.parametrize("action", [RuleAction.HOLD, RuleAction.REJECT])
def test_after_scan_scanner_error_follows_scanner_errors(action: RuleAction) -> None:
    report = _report("pickle", _finding("SCANNER_CRASHED", Outcome.ERROR, "the scanner failed"))
    hits = _policy(scanner_errors=action).after_scan(REPO, _entry(), report, new_repo=False)
    assert [(h.rule, h.action) for h in hits] == [("scanner_errors", action)]
    assert hits[0].message == (
        'policy rule scanner_errors: "model.bin" could not be fully scanned: the scanner failed'
    )


def test_after_scan_remote_code_scanner_error_follows_scanner_errors() -> None:
    report = _report("python", _finding("REMOTE_CODE_UNPARSEABLE", Outcome.ERROR))
    policy = _policy(remote_code=RuleAction.ALLOW)
    assert _rules(policy.after_scan(REPO, _entry("m.py"), report, new_repo=False)) == [
        "scanner_errors"
    ]


@pytest.mark.parametrize("action", [RuleAction.HOLD, RuleAction.REJECT])
def test_after_scan_opaque_data_follows_opaque_data(action: RuleAction) -> None:
    report = _report("opaque", _finding("DATA_OPAQUE", Outcome.CLEAN))
    hits = _policy(opaque_data=action).after_scan(REPO, _entry(), report, new_repo=False)
    assert [(h.rule, h.action) for h in hits] == [("opaque_data", action)]
    assert hits[0].message == 'policy rule opaque_data: "model.bin" is opaque data (no known ' + (
        "loader would execute it)"
    )


def test_after_scan_opaque_data_allowed_by_default() -> None:
    report = _report("opaque", _finding("DATA_OPAQUE", Outcome.CLEAN))
    assert _policy().after_scan(REPO, _entry(), report, new_repo=False) == []


def _torchscript(tmp_path: Path) -> ScanReport:
    import io
    import warnings

    import torch  # a real scripted module, saved as torch.jit.save writes it

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.13 deprecates jit.script; models still ship it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    return _scanned(tmp_path, "model.pt", buffer.getvalue())


def test_after_scan_clean_torchscript_is_released_by_default(tmp_path: Path) -> None:
    report = _torchscript(tmp_path)
    assert report.file_format == "torchscript" and report.outcome is Outcome.CLEAN
    assert _policy().after_scan(REPO, _entry("model.pt"), report, new_repo=False) == []


@pytest.mark.parametrize("action", [RuleAction.HOLD, RuleAction.REJECT])
def test_after_scan_torchscript_follows_torchscript(tmp_path: Path, action: RuleAction) -> None:
    report = _torchscript(tmp_path)
    hits = _policy(torchscript=action).after_scan(REPO, _entry("model.pt"), report, new_repo=False)
    assert [(h.rule, h.action) for h in hits] == [("torchscript", action)]
    assert "TorchScript archive" in hits[0].message
    pickled = _scanned(tmp_path, "w.pkl", pickle.dumps({"a": 1}))
    assert _policy(torchscript=action).after_scan(REPO, _entry(), pickled, new_repo=False) == []


def test_after_scan_new_repo_under_review_is_held(tmp_path: Path) -> None:
    policy = _policy(new_repos=NewRepos.REVIEW)
    hits = policy.after_scan(REPO, _entry(), _safetensors(tmp_path), new_repo=True)
    assert [(h.rule, h.action) for h in hits] == [("new_repos", RuleAction.HOLD)]
    assert hits[0].message.startswith('policy rule new_repos: model "org/model" never had a file')


@pytest.mark.parametrize(
    ("new_repos", "new_repo"), [(NewRepos.AUTO, True), (NewRepos.REVIEW, False)]
)
def test_after_scan_new_repos_holds_only_new_repos_under_review(
    tmp_path: Path, new_repos: NewRepos, new_repo: bool
) -> None:
    policy = _policy(new_repos=new_repos)
    assert policy.after_scan(REPO, _entry(), _safetensors(tmp_path), new_repo=new_repo) == []


def test_after_scan_default_policy_holds_remote_code_and_nothing_else(tmp_path: Path) -> None:
    policy = _policy()
    clean = policy.after_scan(REPO, _entry(), _safetensors(tmp_path), new_repo=True)
    code = _scanned(tmp_path, "modeling.py", b"def f():\n    return 1\n")
    held = policy.after_scan(REPO, _entry("modeling.py"), code, new_repo=True)
    assert clean == []
    assert [(h.rule, h.action) for h in held] == [("remote_code", RuleAction.HOLD)]


# -- audit mode ------------------------------------------------------------------------------------


def test_audit_rules_named_rule_is_recorded_not_enforced() -> None:
    policy = _policy(max_file_bytes=1, deny_publishers=("org/*",), audit_rules=("max_file_bytes",))
    hits = policy.before_fetch(REPO, MAIN, _entry(size=2))
    assert [(h.rule, h.audited) for h in hits] == [
        ("deny_publishers", False),
        ("max_file_bytes", True),
    ]


def test_audit_rules_star_puts_every_rule_in_audit_mode() -> None:
    policy = _policy(allowed_formats=("gguf",), new_repos=NewRepos.REVIEW, audit_rules=("*",))
    hits = policy.after_scan(REPO, _entry(), _report("pickle"), new_repo=True)
    assert _rules(hits) == ["allowed_formats", "new_repos"]
    assert all(hit.audited for hit in hits)


def test_rule_hit_allow_is_not_a_hit() -> None:
    with pytest.raises(ValueError, match="remote_code allows"):
        RuleHit("remote_code", RuleAction.ALLOW, "m")


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (999, "999 bytes"), (1000, "1.0 kB"), (3_200_000_000, "3.2 GB")],
)
def test_human_size_uses_decimal_units(size: int, text: str) -> None:
    assert human_size(size) == text


# -- policy source ---------------------------------------------------------------------------------


class Clock:
    """The injected clock: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _write_policy(path: Path, text: str, *, mtime: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def _source(tmp_path: Path, text: str, clock: Clock) -> tuple[PolicySource, Path]:
    path = tmp_path / "policy.toml"
    _write_policy(path, text, mtime=1_000_000)
    return PolicySource(PolicySettings(file=path, max_file_bytes=5), clock), path


def test_policy_source_without_file_is_the_section() -> None:
    base = PolicySettings(max_file_bytes=7)
    assert PolicySource(base).current().settings == base


def test_policy_source_file_keys_beat_the_section(tmp_path: Path) -> None:
    source, _ = _source(tmp_path, "max_file_bytes = 9\n", Clock())
    assert source.current().settings.max_file_bytes == 9


def test_policy_source_changed_file_applies_after_the_check_interval(tmp_path: Path) -> None:
    clock = Clock()
    source, path = _source(tmp_path, "max_file_bytes = 9\n", clock)
    _write_policy(path, 'max_file_bytes = 11\nremote_code = "reject"\n', mtime=1_000_050)
    clock.now += 1.0
    settings = source.current().settings
    assert (settings.max_file_bytes, settings.remote_code) == (11, RuleAction.REJECT)


def test_policy_source_checks_the_file_at_most_once_per_second(tmp_path: Path) -> None:
    clock = Clock()
    source, path = _source(tmp_path, "max_file_bytes = 9\n", clock)
    _write_policy(path, "max_file_bytes = 11\n", mtime=1_000_050)
    clock.now += 0.5
    assert source.current().settings.max_file_bytes == 9


def test_policy_source_invalid_file_keeps_last_good_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    source, path = _source(tmp_path, "max_file_bytes = 9\n", clock)
    _write_policy(path, 'max_file_bytes = "big"\n', mtime=1_000_050)
    with caplog.at_level(logging.ERROR, logger="proxy.trust.policy_source"):
        for _ in range(3):
            clock.now += 2
            assert source.current().settings.max_file_bytes == 9
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert 'key "policy.max_file_bytes" is "big"' in errors[0].getMessage()
    assert "the last good policy stays in force" in errors[0].getMessage()


def test_policy_source_unknown_format_in_new_file_keeps_last_good(tmp_path: Path) -> None:
    clock = Clock()
    source, path = _source(tmp_path, 'allowed_formats = ["gguf"]\n', clock)
    _write_policy(path, 'allowed_formats = ["ggfu"]\n', mtime=1_000_050)
    clock.now += 2
    assert source.current().settings.allowed_formats == ("gguf",)


def test_policy_source_deleted_file_keeps_last_good(tmp_path: Path) -> None:
    clock = Clock()
    source, path = _source(tmp_path, "max_file_bytes = 9\n", clock)
    path.unlink()
    clock.now += 2
    assert source.current().settings.max_file_bytes == 9


def test_policy_source_file_fixed_after_an_error_applies(tmp_path: Path) -> None:
    clock = Clock()
    source, path = _source(tmp_path, "max_file_bytes = 9\n", clock)
    _write_policy(path, "max_file_bytes = -1\n", mtime=1_000_050)
    clock.now += 2
    source.current()
    _write_policy(path, "max_file_bytes = 13\n", mtime=1_000_100)
    clock.now += 2
    assert source.current().settings.max_file_bytes == 13


def test_policy_source_invalid_file_at_start_raises(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("max_file_bites = 9\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r'key in \[policy\] "max_file_bites" is not a setting'):
        PolicySource(PolicySettings(file=path))


def test_policy_source_missing_file_at_start_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy file .*absent.toml: cannot be read"):
        PolicySource(PolicySettings(file=tmp_path / "absent.toml"))
