"""The `[signing]` settings: trusted signers as `[[signing.trusted]]` tables (or JSON in the
environment), each with exactly one kind of trust anchor; refused typos and unusable files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.config import ConfigError, SigningSettings, TrustedSigner, load_settings
from proxy.trust.signature_checks import check_trust
from tests.signing import LocalSigstore, make_certificate_chain, make_key


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hubwarden.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_signing_trusted_tables_of_each_kind_are_read(tmp_path: Path) -> None:
    config = _config(tmp_path, """
[signing]
require_signature = ["nvidia/*"]
[[signing.trusted]]
name = "NVIDIA CI"
repos = ["nvidia/*"]
identity = "https://github.com/nvidia/models/.github/workflows/sign.yml@refs/heads/main"
issuer = "https://token.actions.githubusercontent.com"
[[signing.trusted]]
repos = ["acme/*", "acme-labs/*"]
public_key = "keys/acme.pem"
[[signing.trusted]]
repos = ["corp/*"]
certificate_chain = ["pki/root.pem", "pki/intermediate.pem"]
""")  # fmt: skip
    signing = load_settings(config, {}, {}).signing
    assert signing.require_signature == ("nvidia/*",)
    identity, key, chain = signing.trusted
    assert (identity.name, identity.issuer) == (
        "NVIDIA CI",
        "https://token.actions.githubusercontent.com",
    )
    assert key.public_key == (Path.cwd() / "keys/acme.pem").resolve()
    assert key.label == "key acme.pem"
    assert [p.name for p in chain.certificate_chain] == ["root.pem", "intermediate.pem"]


def test_signing_trusted_from_the_environment_is_a_json_array() -> None:
    value = json.dumps([{"repos": ["acme/*"], "identity": "a@acme.example",
                         "issuer": "https://issuer.example"}])  # fmt: skip
    signing = load_settings(None, {"HUBWARDEN_SIGNING_TRUSTED": value}, {}).signing
    assert signing.trusted == (
        TrustedSigner(("acme/*",), identity="a@acme.example", issuer="https://issuer.example"),
    )


@pytest.mark.parametrize(
    "table",
    [
        'repos = ["acme/*"]',  # no trust anchor
        'repos = ["acme/*"]\npublic_key = "k.pem"\ncertificate_chain = ["r.pem"]',  # two kinds
        'repos = ["acme/*"]\nidentity = "a@acme.example"',  # an identity without its issuer
        'repos = []\npublic_key = "k.pem"',  # no repos
        'repos = ["acme/*"]\npublic_key = "k.pem"\nkeyid = "x"',  # a typo
        'repos = "acme/*"\npublic_key = "k.pem"',  # not a list
    ],
)
def test_signing_trusted_table_refused(tmp_path: Path, table: str) -> None:
    config = _config(tmp_path, f"[[signing.trusted]]\n{table}\n")
    with pytest.raises(ConfigError, match=r'key "signing\.trusted"') as caught:
        load_settings(config, {}, {})
    assert caught.value.key == "signing.trusted"


@pytest.mark.parametrize("name", ["../model.sig", "/model.sig", "a\\\\b.sig", "a//b", ""])
def test_signing_signature_file_outside_the_repo_is_refused(tmp_path: Path, name: str) -> None:
    config = _config(tmp_path, f'[signing]\nsignature_file = "{name}"\n')
    with pytest.raises(ConfigError, match=r"signing\.signature_file"):
        load_settings(config, {}, {})


def test_check_trust_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    settings = SigningSettings(trusted=(TrustedSigner(("a/*",), public_key=tmp_path / "no"),))
    with pytest.raises(ConfigError, match=r"trusted key .* cannot be read"):
        check_trust(settings)


def test_check_trust_trust_config_without_signing_config_is_a_config_error(
    tmp_path: Path,
) -> None:
    full = json.loads(LocalSigstore().trust_config(tmp_path / "full.json").read_text())
    del full["signingConfig"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(full))
    with pytest.raises(ConfigError, match="trustedRoot and signingConfig"):
        check_trust(SigningSettings(sigstore_trust_config=partial))


def test_check_trust_digest_changes_with_a_trusted_file(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    chain = make_certificate_chain(tmp_path)
    settings = SigningSettings(trusted=(
        TrustedSigner(("a/*",), public_key=key.public),
        TrustedSigner(("b/*",), certificate_chain=(chain.root,)),
    ))  # fmt: skip
    before = check_trust(settings)
    key.public.write_bytes(make_key(tmp_path / "new").public.read_bytes())
    assert check_trust(settings) != before
