"""`shown()` and the domain exceptions: facts as attributes, messages that are safe to reflect."""

from __future__ import annotations

import pytest

from proxy.errors import (
    MAX_REFLECTED_CHARS,
    EntryNotFound,
    GatedRepo,
    IntegrityError,
    InvalidInput,
    NotReady,
    RepoNotFound,
    RevisionNotFound,
    UpstreamRateLimited,
    shown,
)


def test_shown_plain_ascii_is_unchanged() -> None:
    assert shown("org/model main") == "org/model main"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("a\x00b", "a\\x00b"),
        ("a\x1b[31mb", "a\\x1b[31mb"),
        ("a\x7fb", "a\\x7fb"),
        ("é", "\\xe9"),
        ("a\u2028b", "a\\u2028b"),
        ("a\tb", "a\\tb"),
    ],
)
def test_shown_control_and_non_ascii_characters_are_escaped(value: str, expected: str) -> None:
    assert shown(value) == expected


def test_shown_long_value_is_cut_to_the_limit() -> None:
    text = shown("x" * 5000)
    assert len(text) == MAX_REFLECTED_CHARS
    assert text.endswith("…")


def test_shown_escapes_before_cutting_so_no_raw_control_survives() -> None:
    text = shown("\n" * 500)
    assert "\n" not in text
    assert len(text) == MAX_REFLECTED_CHARS


def test_shown_non_string_value_uses_its_str() -> None:
    assert shown(42) == "42"


def test_invalid_input_message_names_part_value_and_reason() -> None:
    exc = InvalidInput("revision", "ma\nin", "is not a valid git ref name")
    assert exc.message == 'revision "ma\\nin" is not a valid git ref name'
    assert (exc.part, exc.value) == ("revision", "ma\nin")


@pytest.mark.parametrize(
    ("authenticated", "message"),
    [(True, "Repository not found"), (False, "Invalid username or password.")],
)
def test_repo_not_found_message_is_the_hubs_text(authenticated: bool, message: str) -> None:
    assert RepoNotFound("org/m", authenticated=authenticated).message == message


def test_gated_repo_message_for_a_token_without_access_says_not_authorized() -> None:
    message = GatedRepo("org/m", "model", authenticated=True).message
    assert message.startswith("Access to model org/m is restricted and you are not in the")


def test_gated_repo_message_for_anonymous_says_log_in() -> None:
    assert GatedRepo("org/m", "dataset", authenticated=False).message.endswith("Please log in.")


def test_revision_not_found_message_escapes_the_revision() -> None:
    assert RevisionNotFound("a\nb").message == "Invalid rev id: a\\nb"


def test_entry_not_found_file_message_is_the_hubs_text() -> None:
    exc = EntryNotFound("x.bin", commit="a" * 40)
    assert (exc.message, exc.commit) == ("Entry not found", "a" * 40)


def test_entry_not_found_folder_message_names_folder_and_revision() -> None:
    exc = EntryNotFound("sub", commit=None, folder=True, rev="main")
    assert exc.message == 'sub does not exist on "main"'


def test_integrity_error_keeps_expected_and_received_values() -> None:
    exc = IntegrityError("m.bin", "sha256", "a" * 64, "b" * 64)
    assert (exc.expected, exc.got) == ("a" * 64, "b" * 64)
    assert "advertised " + "a" * 64 in exc.message


def test_not_ready_message_says_when_to_retry() -> None:
    assert "retry in 7 s" in NotReady("m.bin", 7).message


def test_upstream_rate_limited_keeps_retry_after() -> None:
    assert UpstreamRateLimited(12).retry_after_s == 12
