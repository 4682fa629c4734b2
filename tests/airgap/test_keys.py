"""The signing key and the trust store, and `hubwarden keys …` through its register() hook."""

from __future__ import annotations

import argparse
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from proxy.airgap.commands import register
from proxy.airgap.errors import KeysError
from proxy.airgap.keys import KeyStore, SigningKey, bundle_hint, fingerprint
from proxy.config import load_settings
from proxy.errors import HubwardenError


def _public_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _other_key_pem() -> bytes:
    return _public_pem(ec.generate_private_key(ec.SECP256R1()))


# -- the signing key ----------------------------------------------------------------------------


def test_create_writes_a_p256_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "data")
    info = store.create()
    assert stat.S_IMODE(store.signing_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert store.show() == info
    assert isinstance(store.signing_key().public_key.curve, ec.SECP256R1)


def test_fingerprint_is_the_sha256_of_the_der_public_key(key: SigningKey) -> None:
    der = key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.info.fingerprint == hashlib.sha256(der).hexdigest() == fingerprint(key.public_key)


def test_bundle_hint_is_the_sha256_of_the_pem_as_model_signing_checks(key: SigningKey) -> None:
    assert bundle_hint(key.public_key) == hashlib.sha256(key.info.pem.encode()).hexdigest()


def test_create_never_replaces_an_existing_key(exporter: KeyStore) -> None:
    before = exporter.signing_path.read_bytes()
    with pytest.raises(KeysError, match=r"already exists .* never replaced"):
        exporter.create()
    assert exporter.signing_path.read_bytes() == before


def test_signing_key_missing_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match=r"no signing key at .*`hubwarden keys create`"):
        KeyStore(tmp_path / "data").signing_key()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_signing_key_open_to_others_is_refused_with_the_chmod(
    exporter: KeyStore, mode: int
) -> None:
    exporter.signing_path.chmod(mode)
    with pytest.raises(KeysError, match=rf"open to other users \(mode 0{mode:o}\).*chmod 600"):
        exporter.signing_key()


def test_signing_key_damaged_is_refused(exporter: KeyStore) -> None:
    exporter.signing_path.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(KeysError, match="cannot be loaded"):
        exporter.signing_key()


def test_signing_key_repr_shows_no_secret(key: SigningKey) -> None:
    assert repr(key) == f"SigningKey(fingerprint={key.info.fingerprint})"


# -- the trust store ----------------------------------------------------------------------------


def test_trust_then_list_then_untrust(tmp_path: Path, key: SigningKey) -> None:
    store = KeyStore(tmp_path / "offline")
    trusted = store.trust(key.info.pem.encode(), "dmz")
    assert trusted.fingerprint == key.info.fingerprint
    assert [(k.name, k.fingerprint) for k in store.trusted()] == [("dmz", key.info.fingerprint)]
    assert (store.trusted_dir / "dmz.pem").read_text() == key.info.pem
    store.untrust("dmz")
    assert store.trusted() == []


def test_trust_takes_the_output_of_keys_show_as_it_is(tmp_path: Path, key: SigningKey) -> None:
    shown = f"fingerprint: {key.info.fingerprint}\n{key.info.pem}".encode()
    assert KeyStore(tmp_path / "o").trust(shown, "dmz").fingerprint == key.info.fingerprint


def test_trust_same_key_under_a_second_name_is_refused(importer: KeyStore, key: SigningKey) -> None:
    with pytest.raises(KeysError, match='already trusted as "dmz"; one key has one name'):
        importer.trust(key.info.pem.encode(), "dmz-again")
    assert [k.name for k in importer.trusted()] == ["dmz"]


def test_trust_a_taken_name_is_refused(importer: KeyStore) -> None:
    with pytest.raises(KeysError, match=r'already trusted as "dmz".*untrust dmz'):
        importer.trust(_other_key_pem(), "dmz")


def test_trust_a_private_key_is_refused_without_echoing_it(
    importer: KeyStore, exporter: KeyStore
) -> None:
    private = exporter.signing_path.read_bytes()
    with pytest.raises(KeysError, match="this is a private key") as caught:
        importer.trust(private, "oops")
    assert "BEGIN" not in str(caught.value)


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (b"hello", "not a PEM public key"),
        (_public_pem(rsa.generate_private_key(65537, 2048)), "not ECDSA P-256"),
        (_public_pem(ec.generate_private_key(ec.SECP384R1())), "not ECDSA P-256"),
    ],
    ids=["not-pem", "rsa", "p384"],
)
def test_trust_what_is_not_a_p256_public_key_is_refused(
    tmp_path: Path, pem: bytes, message: str
) -> None:
    with pytest.raises(KeysError, match=message):
        KeyStore(tmp_path / "o").trust(pem, "x")


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "a/b", "../x", "a" * 64, "dmz.pem\n"])
def test_trust_an_invalid_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeysError, match="is not valid"):
        KeyStore(tmp_path / "o").trust(_other_key_pem(), name)


def test_untrust_an_unknown_name_says_where_the_names_are(importer: KeyStore) -> None:
    with pytest.raises(KeysError, match=r'no key is trusted as "nope".*keys list'):
        importer.untrust("nope")


def test_trusted_store_with_a_damaged_file_fails_closed(importer: KeyStore) -> None:
    (importer.trusted_dir / "broken.pem").write_text("not a key")
    with pytest.raises(KeysError, match=r"broken.pem is unusable.*untrust broken"):
        importer.trusted()
    importer.untrust("broken")
    assert [k.name for k in importer.trusted()] == ["dmz"]


# -- the command --------------------------------------------------------------------------------


def _keys(data_dir: Path, *argv: str) -> int:
    """Run `hubwarden keys …` as `proxy.cli.main` does: errors are exit 1, usage exit 2."""
    settings = load_settings(None, {}, {"data_dir": str(data_dir)})
    parser = argparse.ArgumentParser(prog="hubwarden")
    commands = parser.add_subparsers()

    def add_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data-dir")

    register(commands, lambda args: settings, add_options)
    try:
        args = parser.parse_args(["keys", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        code: int = args.command(args)
    except HubwardenError as exc:
        print(f"hubwarden: error: {exc.message}")  # noqa: T201 - as main() prints it
        return 1
    return code


def test_keys_command_create_show_trust_list_untrust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dmz, offline = tmp_path / "dmz", tmp_path / "offline"
    assert _keys(dmz, "create") == 1  # never in a directory that is not the server's
    assert not dmz.exists()
    dmz.mkdir()
    offline.mkdir()
    assert _keys(dmz, "create") == 0
    fingerprint_line = capsys.readouterr().out.splitlines()[-1]
    assert _keys(dmz, "show") == 0
    shown = capsys.readouterr().out
    assert shown.startswith(fingerprint_line + "\n-----BEGIN PUBLIC KEY-----")
    (tmp_path / "dmz.pub").write_text(shown)
    assert _keys(offline, "trust", str(tmp_path / "dmz.pub"), "--name", "dmz") == 0
    assert capsys.readouterr().out == f"trusted dmz\n{fingerprint_line}\n"
    assert _keys(offline, "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"name": "dmz", "fingerprint": fingerprint_line.split(": ")[1]}]
    assert _keys(offline, "untrust", "dmz") == 0
    assert _keys(offline, "list") == 0
    assert "no trusted keys" in capsys.readouterr().out


def test_keys_command_show_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _keys(tmp_path, "create")
    capsys.readouterr()
    assert _keys(tmp_path, "show", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert len(shown["fingerprint"]) == 64


def test_keys_command_failure_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _keys(tmp_path, "trust", str(tmp_path / "missing.pub"), "--name", "dmz") == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "cannot read the key file" in out and "missing.pub" in out


def test_keys_command_show_without_a_key_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _keys(tmp_path, "show") == 1
    assert "`hubwarden keys create`" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [("trust", "x.pub", "--name", "Bad Name"), ("trust", "x.pub"), ("untrust", "../x"), ()],
    ids=["bad-name", "no-name", "bad-untrust", "no-action"],
)
def test_keys_command_usage_error_exits_2(tmp_path: Path, argv: tuple[str, ...]) -> None:
    assert _keys(tmp_path, *argv) == 2
