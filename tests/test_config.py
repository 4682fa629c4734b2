"""Settings: defaults, file, environment and flags in that order of strength; every bad input
refused with a message naming where it came from, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from proxy.config import (
    AdminSettings,
    ConfigError,
    FetchSettings,
    IngestSettings,
    MetricsSettings,
    NotifySettings,
    PinnedChange,
    PolicySettings,
    ScanSettings,
    Secret,
    Settings,
    SigningSettings,
    StoreSettings,
    WatchSettings,
    env_variables,
    load_settings,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "config.example.toml"
COMMENTED_SETTING = re.compile(r"^# ([a-z_]+ = .*)$")


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def _uncommented_example() -> str:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    return "\n".join(
        match.group(1) if (match := COMMENTED_SETTING.match(line)) else line for line in lines
    )


# -- defaults and precedence --------------------------------------------------------------------


def test_load_settings_nothing_given_uses_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {}, {})
    assert (settings.host, settings.port, settings.upstream) == (
        "127.0.0.1",
        8080,
        "https://huggingface.co",
    )
    assert settings.data_dir == tmp_path / "hubwarden-data"
    assert settings.effective_database_url == (
        f"sqlite+aiosqlite:///{tmp_path}/hubwarden-data/hubwarden.db"
    )
    assert settings.fetch.token is None
    assert settings.policy.pinned_change is PinnedChange.HOLD


def test_load_settings_file_beats_defaults(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "port = 9000\n[scan]\nworkers = 4\n")
    settings = load_settings(config, {}, {})
    assert (settings.port, settings.scan.workers) == (9000, 4)


def test_load_settings_environment_beats_file(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "port = 9000\n[scan]\nworkers = 4\n")
    env = {"HUBWARDEN_PORT": "9001", "HUBWARDEN_SCAN_WORKERS": "5"}
    settings = load_settings(config, env, {})
    assert (settings.port, settings.scan.workers) == (9001, 5)


def test_load_settings_flags_beat_environment(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "port = 9000\n")
    settings = load_settings(config, {"HUBWARDEN_PORT": "9001"}, {"port": 9002, "host": None})
    assert (settings.port, settings.host) == (9002, "127.0.0.1")


def test_load_settings_relative_data_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {"HUBWARDEN_DATA_DIR": "store/here"}, {})
    assert settings.data_dir == tmp_path / "store" / "here"


def test_load_settings_upstream_trailing_slash_is_dropped() -> None:
    settings = load_settings(None, {}, {"upstream": "http://127.0.0.1:9999/"})
    assert settings.upstream == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://hw@db/x", "postgresql+asyncpg://hw@db/x"),
        ("postgres://hw@db/x", "postgresql+asyncpg://hw@db/x"),
        ("sqlite:////var/hw.db", "sqlite+aiosqlite:////var/hw.db"),
        ("postgresql+asyncpg://hw@db/x", "postgresql+asyncpg://hw@db/x"),
    ],
)
def test_load_settings_database_url_maps_to_async_driver(given: str, expected: str) -> None:
    settings = load_settings(None, {"HUBWARDEN_DATABASE_URL": given}, {})
    assert settings.effective_database_url == expected


def test_load_settings_settings_are_frozen() -> None:
    settings = load_settings(None, {}, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


# -- environment parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)],
)
def test_load_settings_env_boolean_spellings_are_parsed(text: str, expected: bool) -> None:
    assert load_settings(None, {"HUBWARDEN_OFFLINE": text}, {}).offline is expected


def test_load_settings_env_list_is_comma_separated() -> None:
    env = {"HUBWARDEN_POLICY_UNPINNED_PATHS": " *.md , docs/*,, LICENSE "}
    settings = load_settings(None, env, {})
    assert settings.policy.unpinned_paths == ("*.md", "docs/*", "LICENSE")


def test_load_settings_env_float_is_parsed() -> None:
    settings = load_settings(None, {"HUBWARDEN_FETCH_READ_TIMEOUT_S": "2.5"}, {})
    assert settings.fetch.read_timeout_s == 2.5


def test_load_settings_env_empty_optional_means_unset() -> None:
    settings = load_settings(None, {"HUBWARDEN_PUBLIC_URL": ""}, {})
    assert settings.public_url is None


def test_load_settings_env_enum_is_case_insensitive() -> None:
    settings = load_settings(None, {"HUBWARDEN_POLICY_PINNED_CHANGE": "Hold"}, {})
    assert settings.policy.pinned_change is PinnedChange.HOLD


@pytest.mark.parametrize(
    "variable", ["HUBWARDEN_CONFIG", "HUBWARDEN_TEST_POSTGRES_URL", "HUBWARDEN_BENCH_SIZE"]
)
def test_load_settings_env_non_setting_variables_are_ignored(variable: str) -> None:
    assert load_settings(None, {variable: "x"}, {}) == load_settings(None, {}, {})


# -- the service token --------------------------------------------------------------------------


def test_load_settings_token_unset_falls_back_to_hf_token() -> None:
    settings = load_settings(None, {"HF_TOKEN": "hf_fallback"}, {})
    assert settings.fetch.token == Secret("hf_fallback")


def test_load_settings_token_set_beats_hf_token() -> None:
    env = {"HF_TOKEN": "hf_fallback", "HUBWARDEN_FETCH_TOKEN": "hf_service"}
    settings = load_settings(None, env, {})
    assert settings.fetch.token is not None and settings.fetch.token.reveal() == "hf_service"


def test_settings_repr_hides_token_and_database_url() -> None:
    env = {"HF_TOKEN": "hf_sekrit", "HUBWARDEN_DATABASE_URL": "postgresql://u:pw-sekrit@db/x"}
    settings = load_settings(None, env, {})
    assert "sekrit" not in repr(settings)
    assert "sekrit" not in str(settings.fetch.token)


def test_load_settings_bad_token_error_does_not_show_it() -> None:
    with pytest.raises(ConfigError, match="HUBWARDEN_FETCH_TOKEN is \\(hidden\\)") as caught:
        load_settings(None, {"HUBWARDEN_FETCH_TOKEN": "hf_ sekrit"}, {})
    assert "sekrit" not in str(caught.value)


def test_load_settings_token_in_world_readable_file_is_refused(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", '[fetch]\ntoken = "hf_x"\n', mode=0o644)
    with pytest.raises(ConfigError, match=r"every user can read it \(mode 644\); run chmod o-r"):
        load_settings(config, {}, {})


def test_load_settings_token_in_private_file_is_read(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", '[fetch]\ntoken = "hf_x"\n', mode=0o640)
    assert load_settings(config, {}, {}).fetch.token == Secret("hf_x")


# -- refused input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HUBWARDEN_PORT", "0", 'HUBWARDEN_PORT is "0"; expected a whole number from 1 to 65535'),
        ("HUBWARDEN_PORT", "65536", "from 1 to 65535"),
        ("HUBWARDEN_PORT", "80a", 'HUBWARDEN_PORT is "80a"'),
        ("HUBWARDEN_SCAN_TIMEOUT_S", "5m", "a number of seconds greater than 0"),
        ("HUBWARDEN_SCAN_TIMEOUT_S", "-1", "a number of seconds greater than 0"),
        ("HUBWARDEN_FETCH_READ_TIMEOUT_S", "nan", '"nan"; expected a number of seconds'),
        ("HUBWARDEN_FETCH_READ_TIMEOUT_S", "inf", '"inf"; expected a number of seconds'),
        ("HUBWARDEN_SCAN_WORKERS", "1.5", "a whole number from 1 to 256"),
        ("HUBWARDEN_OFFLINE", "maybe", '"maybe"; expected true or false'),
        ("HUBWARDEN_UPSTREAM", "ftp://hub", '"ftp://hub"; expected an http\\(s\\) URL'),
        ("HUBWARDEN_UPSTREAM", "https://u:p@hub", "expected an http\\(s\\) URL"),
        ("HUBWARDEN_UPSTREAM", "https://hub?x=1", "expected an http\\(s\\) URL"),
        ("HUBWARDEN_UPSTREAM", "https://hub:99999", "expected an http\\(s\\) URL"),
        ("HUBWARDEN_PUBLIC_URL", "hubwarden:8080", "expected an http\\(s\\) URL"),
        ("HUBWARDEN_LOG_LEVEL", "LOUD", "expected DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("HUBWARDEN_POLICY_PINNED_CHANGE", "ignore", "expected one of block, hold, allow"),
        ("HUBWARDEN_POLICY_MAX_RISK", "extreme", '"extreme"; expected one of off, low, medium'),
        ("HUBWARDEN_HOST", "a host", "expected a host name or IP address"),
        ("HUBWARDEN_CONTACT", "ops\r\nX-Evil: 1", "expected 1 to 200 printable ASCII"),
        ("HUBWARDEN_DATABASE_URL", "mysql://u@db/x", "is \\(hidden\\); expected a sqlite://"),
        ("HUBWARDEN_FETCH_CHUNK_BYTES", "1", "whole number of bytes from 4096"),
    ],
)
def test_load_settings_bad_env_value_is_refused_with_its_name(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(None, {variable: value}, {})
    assert caught.value.message.startswith(f"environment variable {variable} is ")
    assert caught.value.source == variable


def test_load_settings_unknown_env_variable_is_refused_with_suggestion() -> None:
    with pytest.raises(
        ConfigError,
        match=r'environment variable "HUBWARDEN_PROT" is not a setting '
        r'\(did you mean "HUBWARDEN_PORT"\?\)',
    ):
        load_settings(None, {"HUBWARDEN_PROT": "80"}, {})


def test_load_settings_bad_flag_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^option --port is 0; expected a whole number"):
        load_settings(None, {}, {"port": 0})


def test_load_settings_unknown_flag_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r'option "scan.wrokers" is not a setting'):
        load_settings(None, {}, {"scan.wrokers": 3})


def test_load_settings_unknown_file_key_is_refused_with_suggestion(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "[scan]\ntimeout = 5\n")
    with pytest.raises(
        ConfigError,
        match=rf'^{re.escape(str(config))}: key in \[scan\] "timeout" is not a setting '
        r'\(did you mean "timeout_s"\?\); expected one of',
    ):
        load_settings(config, {}, {})


def test_load_settings_unknown_file_section_is_refused(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "[scanner]\ntimeout_s = 5\n")
    with pytest.raises(ConfigError, match=r'key "scanner" is not a setting \(did you mean "scan"'):
        load_settings(config, {}, {})


def test_load_settings_section_given_as_value_is_refused(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "scan = 3\n")
    with pytest.raises(ConfigError, match=r'key "scan" must be a table \(\[scan\]\)'):
        load_settings(config, {}, {})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('port = "8080"', 'key "port" is "8080"; expected a whole number from 1 to 65535'),
        ("port = true", 'key "port" is true; expected a whole number'),
        ("offline = 1", 'key "offline" is 1; expected true or false'),
        ('[scan]\ntimeout_s = "5m"', 'key "scan.timeout_s" is "5m"; expected a number of seconds'),
        ('[policy]\nunpinned_paths = "*.md"', 'key "policy.unpinned_paths" is "\\*.md"'),
        ("[policy]\nunpinned_paths = [1]", "expected a list of glob patterns"),
        ('[policy]\nmax_risk = "severe"', 'key "policy.max_risk" is "severe"; expected one of off'),
        ("[policy]\nmax_risk = 2", 'key "policy.max_risk" is 2; expected one of off, low'),
    ],
)
def test_load_settings_file_value_of_wrong_type_is_refused(
    tmp_path: Path, line: str, message: str
) -> None:
    config = _write(tmp_path / "c.toml", line + "\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(config, {}, {})


def test_load_settings_file_not_toml_is_refused_naming_file(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "port = = 1\n")
    with pytest.raises(
        ConfigError, match=rf"^config file {re.escape(str(config))}: not valid TOML"
    ):
        load_settings(config, {}, {})


def test_load_settings_missing_file_is_refused_naming_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent.toml: cannot be read \(No such file"):
        load_settings(tmp_path / "absent.toml", {}, {})


def test_load_settings_oversized_file_is_refused(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.toml", "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_settings(config, {}, {})


# -- config.example.toml ------------------------------------------------------------------------


def test_config_example_uncommented_equals_defaults(tmp_path: Path) -> None:
    config = _write(tmp_path / "example.toml", _uncommented_example())
    assert load_settings(config, {}, {}) == load_settings(None, {}, {})


def test_config_example_lists_every_setting() -> None:
    document = tomllib.loads(_uncommented_example())
    listed = {
        f"{name}.{key}" if isinstance(value, dict) else name
        for name, value in document.items()
        for key in (value if isinstance(value, dict) else [None])
    }
    assert listed == set(env_variables().values())


def test_config_example_names_every_environment_variable() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = [variable for variable in env_variables() if variable not in text]
    assert missing == []


def test_env_variables_cover_every_settings_field() -> None:
    sections = {"fetch": FetchSettings, "ingest": IngestSettings, "scan": ScanSettings}
    sections["policy"] = PolicySettings
    sections["admin"] = AdminSettings
    sections["notify"] = NotifySettings
    sections["watch"] = WatchSettings
    sections["metrics"] = MetricsSettings
    sections["store"] = StoreSettings
    sections["signing"] = SigningSettings
    fields = {f.name for f in dataclasses.fields(Settings)} - set(sections)
    for name, cls in sections.items():
        fields |= {f"{name}.{f.name}" for f in dataclasses.fields(cls)}
    assert set(env_variables().values()) == fields
    assert env_variables()["HUBWARDEN_SCAN_TIMEOUT_S"] == "scan.timeout_s"
