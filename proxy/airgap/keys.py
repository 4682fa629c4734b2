"""The instance's signing key and the public keys it trusts, as files under the data directory.

    <data_dir>/keys/              mode 0700
        signing.pem               the ECDSA P-256 private key (PKCS#8 PEM), mode 0600, made once
        trusted/<name>.pem        one trusted public key per file (SubjectPublicKeyInfo PEM)

A key is named by its fingerprint: the sha256 of its DER SubjectPublicKeyInfo, in hex (what
`hubwarden keys show` prints on the exporting side and `keys trust` / `keys list` on the
importing side, to compare over a second channel).

Decisions:
- The signing key is never overwritten: `create` refuses when one exists (a new key would
  orphan every importer that trusts the old one). Rotating means moving the file away by hand.
- A signing key file readable or writable by group or others is refused, as ssh refuses a
  private key with open permissions: the message gives the chmod that fixes it. The key is not
  encrypted with a passphrase (an export runs unattended); the file mode is its protection.
- The trust store is plain files, so no migration is needed; trusted keys are P-256 only, and
  one key may be trusted under one name only (two names for one key would make "who signed
  this" ambiguous).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.airgap.errors import KeysError
from proxy.errors import shown

KEYS_DIR = "keys"
SIGNING_KEY_FILE = "signing.pem"
TRUSTED_DIR = "trusted"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MAX_PEM_BYTES = 64 * 1024
"""A PEM key file is a few hundred bytes; anything larger is not one (and is not read whole)."""
_UNSAFE_MODE_BITS = stat.S_IRWXG | stat.S_IRWXO
_TRUST_HINT = "give the file `hubwarden keys show` prints on the exporting instance"


def check_name(name: str) -> str:
    """A trusted key's name, validated. Raises KeysError."""
    if not NAME_PATTERN.fullmatch(name):
        raise KeysError(
            f'key name "{shown(name)}" is not valid; use 1 to 63 lowercase letters, digits, '
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the DER SubjectPublicKeyInfo, hex: the key's name for humans (cosign hashes
    the same bytes)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    """The canonical SubjectPublicKeyInfo PEM (what `show` prints and the trust store keeps)."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def bundle_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """The `verificationMaterial.publicKey.hint` written into a Sigstore bundle: sha256 of the
    canonical PEM, hex. model-signing's key verifier compares its hint with exactly this value
    (and refuses a bundle whose hint differs), while cosign ignores the hint; so this hint, not
    the DER fingerprint, keeps the bundle verifiable by both."""
    return hashlib.sha256(public_pem(public_key).encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class PublicKeyInfo:
    pem: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the admin trusts to sign bundles, under a name."""

    name: str
    public_key: ec.EllipticCurvePublicKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @property
    def pem(self) -> str:
        return public_pem(self.public_key)

    def answers_to(self, hint: str) -> bool:
        """Whether a bundle's (unauthenticated) key hint names this key: model-signing's form
        (sha256 of the PEM, hex), the fingerprint, or cosign's (sha256 of the DER, base64)."""
        der_digest = bytes.fromhex(self.fingerprint)
        return hint in (
            bundle_hint(self.public_key),
            self.fingerprint,
            base64.b64encode(der_digest).decode("ascii"),
        )


class SigningKey:
    """The instance's private key: signs, and tells its public half. Never printed."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def info(self) -> PublicKeyInfo:
        return PublicKeyInfo(public_pem(self.public_key), fingerprint(self.public_key))

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 with SHA-256 over `data`; the signature DER-encoded."""
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"SigningKey(fingerprint={self.info.fingerprint})"


class KeyStore:
    """The signing key and the trusted keys of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / KEYS_DIR
        self.signing_path = self.dir / SIGNING_KEY_FILE
        self.trusted_dir = self.dir / TRUSTED_DIR

    # -- the signing key ---------------------------------------------------------------------

    def create(self) -> PublicKeyInfo:
        """Make the signing key. Raises KeysError when one exists (it is never replaced)."""
        if self.signing_path.exists():
            raise KeysError(
                f"a signing key already exists at {self.signing_path}; it is never replaced "
                "(importers trust it): `hubwarden keys show` prints it"
            )
        private_key = ec.generate_private_key(ec.SECP256R1())
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._make_dirs()
        _write_new_file(self.signing_path, pem, mode=0o600, what="signing key")
        return SigningKey(private_key).info

    def signing_key(self) -> SigningKey:
        """Load the signing key. Raises KeysError when it is missing, unsafe or unreadable."""
        try:
            status = self.signing_path.stat()
        except FileNotFoundError:
            raise KeysError(
                f"no signing key at {self.signing_path}; make one with `hubwarden keys create`"
            ) from None
        except OSError as exc:
            raise KeysError(
                f"cannot read the signing key {self.signing_path}: {exc.strerror}"
            ) from None
        if not stat.S_ISREG(status.st_mode):
            raise KeysError(f"the signing key {self.signing_path} is not a regular file")
        if status.st_mode & _UNSAFE_MODE_BITS:
            raise KeysError(
                f"the signing key {self.signing_path} is open to other users (mode "
                f"{stat.S_IMODE(status.st_mode):04o}); run `chmod 600 {self.signing_path}`"
            )
        data = _read_small(self.signing_path, "signing key")
        try:
            private_key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeysError(
                f"the signing key {self.signing_path} cannot be loaded ({_first_line(exc)}); "
                "restore it from a backup"
            ) from None
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, ec.SECP256R1
        ):
            raise KeysError(
                f"the signing key {self.signing_path} is not an ECDSA P-256 key; move it away "
                "and run `hubwarden keys create`"
            )
        return SigningKey(private_key)

    def show(self) -> PublicKeyInfo:
        """The public half of the signing key. Raises KeysError."""
        return self.signing_key().info

    # -- the trust store ---------------------------------------------------------------------

    def trust(self, pem: bytes, name: str) -> TrustedKey:
        """Trust the P-256 public key in `pem` under `name`. Raises KeysError for a bad name,
        a name taken, a key already trusted under another name, or what is not such a key."""
        check_name(name)
        public_key = parse_public_key(pem)
        for existing in self.trusted():
            if existing.name == name:
                raise KeysError(
                    f'a key is already trusted as "{name}" (fingerprint {existing.fingerprint}); '
                    f"`hubwarden keys untrust {name}` first to replace it"
                )
            if existing.fingerprint == fingerprint(public_key):
                raise KeysError(
                    f"this key (fingerprint {existing.fingerprint}) is already trusted as "
                    f'"{existing.name}"; one key has one name'
                )
        self._make_dirs()
        self.trusted_dir.mkdir(mode=0o700, exist_ok=True)
        key = TrustedKey(name, public_key)
        _write_new_file(self._trusted_path(name), key.pem.encode("ascii"), 0o644, "trusted key")
        return key

    def trusted(self) -> list[TrustedKey]:
        """Every trusted key, by name. Raises KeysError for a file that is not a trusted key
        (the store fails closed: fix it or untrust it)."""
        if not self.trusted_dir.is_dir():
            return []
        keys: list[TrustedKey] = []
        for path in sorted(self.trusted_dir.iterdir()):
            if path.suffix != ".pem" or not NAME_PATTERN.fullmatch(path.stem):
                continue  # an editor's backup or a temp file: not a trusted key
            try:
                public_key = parse_public_key(_read_small(path, "trusted key"))
            except KeysError as exc:
                raise KeysError(
                    f"the trusted key file {path} is unusable ({exc.message}); "
                    f"`hubwarden keys untrust {path.stem}` removes it"
                ) from None
            keys.append(TrustedKey(path.stem, public_key))
        return keys

    def untrust(self, name: str) -> None:
        """Stop trusting `name` (even when its file is unusable). Raises KeysError when no key
        has that name."""
        check_name(name)
        try:
            self._trusted_path(name).unlink()
        except FileNotFoundError:
            raise KeysError(
                f'no key is trusted as "{name}"; `hubwarden keys list` shows the names'
            ) from None

    # -- files -------------------------------------------------------------------------------

    def _trusted_path(self, name: str) -> Path:
        return self.trusted_dir / f"{name}.pem"  # name matched NAME_PATTERN: no separator

    def _make_dirs(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def parse_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """The ECDSA P-256 public key in a PEM text (surrounding lines are allowed, so the output of
    `hubwarden keys show` can be used as it is). Raises KeysError."""
    if b"PRIVATE KEY" in pem:
        raise KeysError(f"this is a private key, which must not leave its instance; {_TRUST_HINT}")
    try:
        public_key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeysError(f"not a PEM public key ({_first_line(exc)}); {_TRUST_HINT}") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise KeysError(
            f"the key is {type(public_key).__name__.lstrip('_')}, not ECDSA P-256, which "
            f"Hubwarden bundles are signed with; {_TRUST_HINT}"
        )
    return public_key


def read_key_file(path: Path) -> bytes:
    """A key file named on the command line, bounded. Raises KeysError."""
    return _read_small(path, "key file")


def _read_small(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise KeysError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise KeysError(f"the {what} {path} is larger than {MAX_PEM_BYTES} bytes: not a key")
    return data


def _write_new_file(path: Path, data: bytes, mode: int, what: str) -> None:
    """Write `data` at `path`, which must not exist: a temp file beside it (fsynced), then a
    hard link, which fails rather than replace an existing file; a crash leaves no half key."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, mode)  # the umask may have narrowed (never widened) it; make it exact
        file.write(data)
        file.flush()
        os.fsync(fd)
    try:
        os.link(temp, path)
    except FileExistsError:
        raise KeysError(f"the {what} {path} appeared meanwhile; it was left as it is") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return shown(text[0]) if text else type(exc).__name__
