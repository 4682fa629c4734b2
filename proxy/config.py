"""Settings: defaults in code, overlaid by a TOML file, `HUBWARDEN_*` variables, then CLI flags.

Precedence: flags beat environment beat file beat defaults. Every key has one environment
variable: top-level `port` is `HUBWARDEN_PORT`, `[scan] timeout_s` is `HUBWARDEN_SCAN_TIMEOUT_S`.
`fetch.token`, when set nowhere, falls back to `HF_TOKEN`. `config.example.toml` lists them all.

Input is hostile (a typo is the friendliest case): an unknown key, an unknown `HUBWARDEN_*`
variable, a wrong type or an out-of-range value raises `ConfigError` naming where it came from
(file and key, variable or flag), the value and what is allowed. Nothing here reads `os.environ`:
the CLI passes the environment in, `create_app` receives the `Settings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import re
import stat
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from proxy.errors import HubwardenError, shown

ENV_PREFIX = "HUBWARDEN_"
CONFIG_FILE_VARIABLE = "HUBWARDEN_CONFIG"
TOKEN_FALLBACK_VARIABLE = "HF_TOKEN"  # noqa: S105 (a variable name, not a secret)
# Variables under the prefix that are not settings: the test harness's and the benchmarks' own
# (e.g. HUBWARDEN_TEST_POSTGRES_URL), which live in the same environment as the server's.
NON_SETTING_PREFIXES = ("HUBWARDEN_TEST_", "HUBWARDEN_BENCH_")
MAX_CONFIG_FILE_BYTES = 1024 * 1024
MAX_TEXT_CHARS = 4096
MAX_LIST_ITEMS = 1000
MAX_INT = 2**53
MAX_CHOICES_SHOWN = 16
MiB = 1024 * 1024
SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"
DEFAULT_DATA_DIR = Path("./hubwarden-data")

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"[A-Za-z0-9.:%_\[\]-]{1,253}")
_TRUSTED_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]{1,200}")
_REGION = re.compile(r"[a-z0-9-]{1,40}")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DATABASE_SCHEMES = {
    "sqlite": SQLITE_DRIVER,
    SQLITE_DRIVER: SQLITE_DRIVER,
    "postgres": POSTGRES_DRIVER,
    "postgresql": POSTGRES_DRIVER,
    POSTGRES_DRIVER: POSTGRES_DRIVER,
}


class ConfigError(HubwardenError):
    """A setting from the config file, the environment or a flag is unknown, mistyped or out of
    range, or the config file cannot be read. `source` is the file, variable or flag; `value` is
    the offending value as shown to the user (secrets are never shown)."""

    def __init__(
        self, message: str, *, source: str, key: str = "", value: str = "", allowed: str = ""
    ) -> None:
        self.source = source
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(message)


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A token or password: `repr` and `str` hide it; `reveal()` returns it."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"


class PinnedChange(enum.StrEnum):
    """What a new commit that changes a pinned file does (DESIGN.md, rule 5)."""

    BLOCK = "block"
    HOLD = "hold"
    ALLOW = "allow"


class RuleAction(enum.StrEnum):
    """What a policy rule does with a file it matches: serve it, hold it for review, refuse it."""

    ALLOW = "allow"
    HOLD = "hold"
    REJECT = "reject"


class NewRepos(enum.StrEnum):
    """Clean files of a repo never seen before: released at once, or held until an admin says."""

    AUTO = "auto"
    REVIEW = "review"


class MaxRisk(enum.StrEnum):
    """The highest risk card rating a repo may have and still be served (`[policy] max_risk`):
    a repo rated above it has its files held; "off" compares nothing ("high" allows every
    rating too, but the risk card shows the limit)."""

    OFF = "off"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class LogFormat(enum.StrEnum):
    """How log records are written to stderr: one text line, or one JSON object per line."""

    TEXT = "text"
    JSON = "json"


# The policy rules a refusal names, and that `audit_rules` may put in audit mode ("*": all).
POLICY_RULES = (
    "allow_publishers",
    "deny_publishers",
    "allow_pull_requests",
    "max_file_bytes",
    "allowed_formats",
    "remote_code",
    "unknown_formats",
    "scanner_errors",
    "opaque_data",
    "torchscript",
    "new_repos",
    "require_signature",
    "signature_invalid",
    "uncovered_files",
    "max_risk",
)


# -- per-key rules ----------------------------------------------------------------------------

Check = Callable[[object], object]


@dataclass(frozen=True, slots=True)
class _Rule:
    """Bounds and an extra check for one setting, attached to its dataclass field."""

    minimum: float | None = None
    maximum: float | None = None
    above_zero: bool = False
    check: Check | None = None
    allowed: str = ""
    sensitive: bool = False


def _rule(**rule: typing.Any) -> dict[str, _Rule]:
    """The metadata of a setting's dataclass field."""
    return {"rule": _Rule(**rule)}


def _http_url(value: object) -> object:
    """An http(s) base URL without credentials, query or fragment; the trailing slash dropped."""
    text = str(value)
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or " " in text
    ):
        raise ValueError(text)
    _ = parts.port  # raises ValueError on a port that is not a number in range
    return text.rstrip("/")


def _trusted_hosts(value: object) -> object:
    """Host names (optionally `name:port`) that a request's Host header may name in links."""
    if not isinstance(value, tuple):
        raise TypeError(value)
    for host in value:
        if not _TRUSTED_HOST.fullmatch(host):
            raise ValueError(host)
    return tuple(host.lower() for host in value)


def _host(value: object) -> object:
    if not _HOST.fullmatch(str(value)):
        raise ValueError(value)
    return value


def _log_level(value: object) -> object:
    level = str(value).upper()
    if level not in _LOG_LEVELS:
        raise ValueError(value)
    return level


def _header_text(value: object) -> object:
    """Text that goes into response headers: printable ASCII only, 1 to 200 characters."""
    text = str(value)
    if not (0 < len(text) <= 200 and text.isascii() and text.isprintable()):
        raise ValueError(value)
    return text


def _optional_header_text(value: object) -> object:
    """Header text, or empty (unset)."""
    text = str(value)
    if text and not (len(text) <= 200 and text.isascii() and text.isprintable()):
        raise ValueError(value)
    return text


def _token(value: object) -> object:
    if not isinstance(value, Secret):
        raise TypeError(value)
    text = value.reveal()
    # It goes into an Authorization header: printable ASCII without spaces.
    if not (0 < len(text) <= MAX_TEXT_CHARS and text.isascii() and text.isprintable()):
        raise ValueError("token")  # never the value: messages must not show a secret
    if " " in text:
        raise ValueError("token")
    return value


def _database_url(value: object) -> object:
    """A SQLAlchemy URL for SQLite or PostgreSQL, mapped onto the async drivers we ship."""
    scheme, sep, rest = str(value).partition("://")
    driver = _DATABASE_SCHEMES.get(scheme.lower())
    if driver is None or not sep:
        raise ValueError(value)
    return f"{driver}://{rest}"


def _fail_closed(value: object) -> object:
    """Scanner errors may be held or refused, never served (DESIGN.md rule 6)."""
    if value is RuleAction.ALLOW:
        raise ValueError(value)
    return value


def _rule_names(value: object) -> object:
    if not isinstance(value, tuple):
        raise TypeError(value)
    for name in value:
        if name != "*" and name not in POLICY_RULES:
            raise ValueError(name)
    return value


def _path_patterns(value: object) -> object:
    if not isinstance(value, tuple):
        raise TypeError(value)
    for pattern in value:
        if not (0 < len(pattern) <= 1024):
            raise ValueError(pattern)
    return value


# -- the settings tree ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """How Hubwarden talks to its upstream (`[fetch]`, `HUBWARDEN_FETCH_*`)."""

    token: Secret | None = field(
        default=None, metadata=_rule(check=_token, sensitive=True, allowed="a Hub token")
    )
    connect_timeout_s: float = field(default=10.0, metadata=_rule(above_zero=True, maximum=3600))
    read_timeout_s: float = field(default=30.0, metadata=_rule(above_zero=True, maximum=3600))
    retries: int = field(default=3, metadata=_rule(minimum=0, maximum=100))
    metadata_ttl_s: float = field(default=30.0, metadata=_rule(minimum=0, maximum=86400))
    max_json_bytes: int = field(default=64 * MiB, metadata=_rule(minimum=1024, maximum=4096 * MiB))
    max_tree_entries: int = field(default=1_000_000, metadata=_rule(minimum=1, maximum=100_000_000))
    chunk_bytes: int = field(default=MiB, metadata=_rule(minimum=4096, maximum=256 * MiB))
    access_ttl_s: float = field(default=300.0, metadata=_rule(minimum=0, maximum=86400))
    anonymous_uses_service_token: bool = field(default=False, metadata=_rule())
    # Files this large (and every file over the client's 50 GB plain-HTTP cap) are fetched with
    # `parallel_connections` concurrent Range requests (issue 9 item 4).
    parallel_threshold_bytes: int = field(
        default=64 * MiB, metadata=_rule(minimum=64 * 1024, maximum=MAX_INT)
    )
    parallel_connections: int = field(default=4, metadata=_rule(minimum=1, maximum=32))


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Fetch → verify → scan (`[ingest]`, `HUBWARDEN_INGEST_*`)."""

    hold_tail_bytes: int = field(default=MiB, metadata=_rule(minimum=1, maximum=MAX_INT))
    first_byte_wait_s: float = field(default=3.0, metadata=_rule(above_zero=True, maximum=60))
    retry_after_s: int = field(default=5, metadata=_rule(minimum=1, maximum=3600))
    write_batch_bytes: int = field(
        default=8 * MiB, metadata=_rule(minimum=4096, maximum=1024 * MiB)
    )
    stream_before_release: bool = field(default=True, metadata=_rule())
    free_space_margin_bytes: int = field(
        default=1024 * MiB, metadata=_rule(minimum=0, maximum=MAX_INT)
    )
    retry_backoff_s: float = field(default=10.0, metadata=_rule(minimum=0, maximum=3600))
    retry_backoff_max_s: float = field(default=300.0, metadata=_rule(minimum=0, maximum=86400))
    shutdown_grace_s: float = field(default=30.0, metadata=_rule(minimum=0, maximum=3600))
    lease_s: float = field(default=30.0, metadata=_rule(minimum=1, maximum=3600))


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Scan workers and the limits of each scan job (`[scan]`, `HUBWARDEN_SCAN_*`): the full
    scan of a file and its stream scan (as it arrives) each get `timeout_s`, `max_cpu_s` and a
    process capped at `max_memory_mb`."""

    timeout_s: float = field(default=300.0, metadata=_rule(above_zero=True, maximum=86400))
    max_memory_mb: int = field(default=2048, metadata=_rule(minimum=64, maximum=1024 * 1024))
    max_cpu_s: int = field(default=300, metadata=_rule(minimum=1, maximum=86400))
    workers: int = field(default=2, metadata=_rule(minimum=1, maximum=256))
    stream_workers: int = field(default=2, metadata=_rule(minimum=1, maximum=256))
    stream_worker_jobs: int = field(default=100, metadata=_rule(minimum=1, maximum=1_000_000))


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """What findings, pins and blocks make of a file (`[policy]`, `HUBWARDEN_POLICY_*`)."""

    pinned_change: PinnedChange = field(default=PinnedChange.HOLD, metadata=_rule())
    unpinned_paths: tuple[str, ...] = field(
        default=("*.md", ".gitattributes"),
        metadata=_rule(check=_path_patterns, allowed="a list of glob patterns"),
    )
    allow_pull_requests: bool = field(default=True, metadata=_rule())
    allowed_formats: tuple[str, ...] = field(
        default=(),
        metadata=_rule(check=_path_patterns, allowed="a list of format names, e.g. safetensors"),
    )
    allow_publishers: tuple[str, ...] = field(
        default=(),
        metadata=_rule(check=_path_patterns, allowed='a list of repo globs, e.g. "google/*"'),
    )
    deny_publishers: tuple[str, ...] = field(
        default=(),
        metadata=_rule(check=_path_patterns, allowed='a list of repo globs, e.g. "evil-org/*"'),
    )
    max_file_bytes: int = field(default=0, metadata=_rule(minimum=0, maximum=2**62))
    remote_code: RuleAction = field(default=RuleAction.HOLD, metadata=_rule())
    unknown_formats: RuleAction = field(default=RuleAction.HOLD, metadata=_rule())
    scanner_errors: RuleAction = field(
        default=RuleAction.HOLD, metadata=_rule(check=_fail_closed, allowed="hold or reject")
    )
    opaque_data: RuleAction = field(default=RuleAction.ALLOW, metadata=_rule())
    torchscript: RuleAction = field(default=RuleAction.ALLOW, metadata=_rule())
    new_repos: NewRepos = field(default=NewRepos.AUTO, metadata=_rule())
    max_risk: MaxRisk = field(default=MaxRisk.OFF, metadata=_rule())
    audit_rules: tuple[str, ...] = field(
        default=(),
        metadata=_rule(
            check=_rule_names, allowed='a list of policy rule names, or ["*"] for every rule'
        ),
    )
    file: Path | None = field(default=None, metadata=_rule())


def _webhook_urls(value: object) -> object:
    if not isinstance(value, tuple):
        raise TypeError(value)
    for url in value:
        _http_url(url)
    return value


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The review and what refused users are told (`[admin]`, `HUBWARDEN_ADMIN_*`)."""

    held_message: str = field(
        default="",
        metadata=_rule(check=_optional_header_text, allowed="up to 200 printable ASCII characters"),
    )


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Webhooks told when a file is held or rejected, a repo blocked, a pinned change waits
    (`[notify]`, `HUBWARDEN_NOTIFY_*`)."""

    webhook_urls: tuple[str, ...] = field(
        default=(), metadata=_rule(check=_webhook_urls, allowed="a list of http(s) URLs")
    )
    secret: Secret | None = field(
        default=None,
        metadata=_rule(check=_token, sensitive=True, allowed="a shared secret for HMAC"),
    )
    timeout_s: float = field(default=10.0, metadata=_rule(above_zero=True, maximum=300))
    retries: int = field(default=5, metadata=_rule(minimum=0, maximum=20))


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """`/metrics` for Prometheus (`[metrics]`, `HUBWARDEN_METRICS_*`). With a token, a scrape
    must send `Authorization: Bearer <token>`."""

    enabled: bool = field(default=True, metadata=_rule())
    token: Secret | None = field(
        default=None,
        metadata=_rule(check=_token, sensitive=True, allowed="a bearer token the scraper sends"),
    )


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """The upstream watch: mirrored branches and tags checked for new upstream commits (`[watch]`,
    `HUBWARDEN_WATCH_*`); never in offline mode."""

    interval_s: float = field(default=3600.0, metadata=_rule(minimum=0, maximum=30 * 86400))
    pause_s: float = field(default=1.0, metadata=_rule(minimum=0, maximum=3600))
    prefetch: bool = field(default=False, metadata=_rule())
    prefetch_jobs: int = field(default=2, metadata=_rule(minimum=1, maximum=64))


class StoreKind(enum.StrEnum):
    """Where blobs are kept (`[store] kind`)."""

    LOCAL = "local"
    S3 = "s3"


def _bucket(value: object) -> object:
    """Empty (unset) or an S3 bucket name: 3 to 63 lowercase letters, digits, dots, hyphens."""
    text = str(value)
    if text and not _BUCKET.fullmatch(text):
        raise ValueError(text)
    return text


def _key_prefix(value: object) -> object:
    """Empty or a key prefix such as "hubwarden/": safe characters, no empty, "." or ".."
    segment, no leading "/"; a missing trailing "/" is added."""
    text = str(value)
    if not text:
        return text
    segments = text.removesuffix("/").split("/")
    if not _KEY_PREFIX.fullmatch(text) or any(s in ("", ".", "..") for s in segments):
        raise ValueError(text)
    return text if text.endswith("/") else text + "/"


def _region(value: object) -> object:
    text = str(value)
    if text and not _REGION.fullmatch(text):
        raise ValueError(text)
    return text


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where blobs are kept (`[store]`, `HUBWARDEN_STORE_*`): the data directory, or an
    S3-compatible bucket (temp files and scans stay in the data directory either way)."""

    kind: StoreKind = field(default=StoreKind.LOCAL, metadata=_rule(allowed="local or s3"))
    bucket: str = field(
        default="", metadata=_rule(check=_bucket, allowed="an S3 bucket name, e.g. hubwarden")
    )
    prefix: str = field(
        default="",
        metadata=_rule(check=_key_prefix, allowed='a key prefix such as "mirror/" (no "..")'),
    )
    endpoint_url: str | None = field(
        default=None, metadata=_rule(check=_http_url, allowed="an http(s) URL")
    )
    region: str = field(
        default="", metadata=_rule(check=_region, allowed="a region name, e.g. us-east-1")
    )
    access_key_id: Secret | None = field(
        default=None, metadata=_rule(check=_token, sensitive=True, allowed="an access key id")
    )
    secret_access_key: Secret | None = field(
        default=None, metadata=_rule(check=_token, sensitive=True, allowed="a secret access key")
    )
    presign: bool = field(default=False, metadata=_rule())
    presign_ttl_s: int = field(default=300, metadata=_rule(minimum=1, maximum=7 * 86400))
    part_size_bytes: int = field(
        default=16 * MiB, metadata=_rule(minimum=5 * MiB, maximum=5 * 1024 * MiB)
    )
    upload_grace_s: float = field(default=86400.0, metadata=_rule(minimum=60, maximum=30 * 86400))
    timeout_s: float = field(default=60.0, metadata=_rule(above_zero=True, maximum=3600))


@dataclass(frozen=True, slots=True)
class TrustedSigner:
    """Who may sign the repos matching `repos` (globs over "namespace/name", e.g. "nvidia/*"):
    exactly one of a Sigstore `identity` (the certificate's e-mail or URI) with its OIDC
    `issuer`, an EC `public_key` (PEM file), or a `certificate_chain` (PEM files of the root
    and intermediates). `name` is how people see it ("verified by <name>")."""

    repos: tuple[str, ...]
    name: str = ""
    identity: str = ""
    issuer: str = ""
    public_key: Path | None = None
    certificate_chain: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        """The signer for people: its name, else what identifies it."""
        if self.name:
            return self.name
        if self.identity:
            return f"{self.identity} ({self.issuer})"
        if self.public_key is not None:
            return f"key {self.public_key.name}"
        return f"certificates {', '.join(p.name for p in self.certificate_chain)}"


_SIGNER_KEYS = frozenset({"repos", "name", "identity", "issuer", "public_key", "certificate_chain"})
MAX_TRUSTED_SIGNERS = 1000


def _signer_paths(raw: object) -> tuple[Path, ...]:
    items = raw if isinstance(raw, list | tuple) else [raw]
    return tuple(typing.cast(Path, _typed(Path, item)) for item in items[:MAX_LIST_ITEMS])


def _trusted_signer(raw: object) -> TrustedSigner:
    """One `[[signing.trusted]]` table. Raises ValueError or TypeError."""
    if not isinstance(raw, dict) or not set(raw) <= _SIGNER_KEYS:
        raise ValueError(raw)
    repos = typing.cast(tuple[str, ...], _typed(tuple[str, ...], raw.get("repos", [])))
    texts = {k: str(_instance(raw.get(k, ""), str)) for k in ("name", "identity", "issuer")}
    key = typing.cast(Path, _typed(Path, raw["public_key"])) if "public_key" in raw else None
    chain = _signer_paths(raw["certificate_chain"]) if "certificate_chain" in raw else ()
    kinds = [bool(texts["identity"] or texts["issuer"]), key is not None, bool(chain)]
    if not repos or kinds.count(True) != 1 or bool(texts["identity"]) != bool(texts["issuer"]):
        raise ValueError(raw)
    if any(_CONTROL.search(text) or len(text) > 1024 for text in (*repos, *texts.values())):
        raise ValueError(raw)
    return TrustedSigner(repos, texts["name"], texts["identity"], texts["issuer"], key, chain)


def _trusted_signers(raw: object) -> tuple[TrustedSigner, ...]:
    """`[[signing.trusted]]` tables (a JSON array of objects in the environment)."""
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else []
    items = _instance(raw, (list, tuple))
    if len(items) > MAX_TRUSTED_SIGNERS:  # type: ignore[arg-type]
        raise ValueError(raw)
    return tuple(_trusted_signer(item) for item in items)  # type: ignore[attr-defined]


def _signature_file(value: object) -> object:
    """A file name at the top of the repo or under it: no absolute path, no "..", no "\\"."""
    text = str(value)
    parts = text.split("/")
    if not text or text.startswith("/") or "\\" in text or ".." in parts or "" in parts:
        raise ValueError(value)
    return text


@dataclass(frozen=True, slots=True)
class SigningSettings:
    """OpenSSF model signatures (`[signing]`, `HUBWARDEN_SIGNING_*`): the file a signed repo
    carries, who is trusted to sign which repos, the repos that must be signed, and the Sigstore
    trust config that lets Sigstore signatures be verified without the network."""

    signature_file: str = field(
        default="model.sig",
        metadata=_rule(check=_signature_file, allowed='a path in the repo, e.g. "model.sig"'),
    )
    require_signature: tuple[str, ...] = field(
        default=(),
        metadata=_rule(check=_path_patterns, allowed='a list of repo globs, e.g. "nvidia/*"'),
    )
    trusted: tuple[TrustedSigner, ...] = field(
        default=(),
        metadata=_rule(
            allowed="[[signing.trusted]] tables, each with repos = [globs] and one of identity + "
            "issuer, public_key, or certificate_chain = [PEM files]"
        ),
    )
    sigstore_trust_config: Path | None = field(
        default=None,
        metadata=_rule(allowed="a JSON file holding trustedRoot and signingConfig, or empty"),
    )
    uncovered_files: RuleAction = field(default=RuleAction.HOLD, metadata=_rule())


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `create_app` needs to know, checked and frozen."""

    host: str = field(
        default="127.0.0.1", metadata=_rule(check=_host, allowed="a host name or IP address")
    )
    port: int = field(default=8080, metadata=_rule(minimum=1, maximum=65535))
    workers: int = field(default=1, metadata=_rule(minimum=1, maximum=64))
    public_url: str | None = field(
        default=None, metadata=_rule(check=_http_url, allowed="an http(s) URL")
    )
    trusted_hosts: tuple[str, ...] = field(
        default=(),
        metadata=_rule(
            check=_trusted_hosts, allowed='a list of host names, each with an optional ":port"'
        ),
    )
    cursor_secret: Secret | None = field(
        default=None,
        metadata=_rule(check=_token, sensitive=True, allowed="a secret shared by the replicas"),
    )
    header_timeout_s: float = field(default=10.0, metadata=_rule(above_zero=True, maximum=3600))
    idle_timeout_s: float = field(default=60.0, metadata=_rule(above_zero=True, maximum=86400))
    max_connections: int = field(default=1024, metadata=_rule(minimum=1, maximum=1_000_000))
    max_connections_per_client: int = field(
        default=256, metadata=_rule(minimum=1, maximum=1_000_000)
    )
    max_requests_per_connection: int = field(
        default=1000, metadata=_rule(minimum=1, maximum=MAX_INT)
    )
    busy_retry_after_s: int = field(default=2, metadata=_rule(minimum=1, maximum=3600))
    data_dir: Path = field(default=DEFAULT_DATA_DIR, metadata=_rule())
    database_url: str | None = field(
        default=None,
        repr=False,  # it may hold a password
        metadata=_rule(
            check=_database_url,
            sensitive=True,
            allowed="a sqlite:// or postgresql:// URL, e.g. postgresql://user@db.example/hubwarden",
        ),
    )
    upstream: str = field(
        default="https://huggingface.co", metadata=_rule(check=_http_url, allowed="an http(s) URL")
    )
    offline: bool = field(default=False, metadata=_rule())
    upgrade_on_start: bool = field(default=True, metadata=_rule())
    log_level: str = field(
        default="INFO", metadata=_rule(check=_log_level, allowed=", ".join(_LOG_LEVELS))
    )
    log_format: LogFormat = field(default=LogFormat.TEXT, metadata=_rule())
    contact: str = field(
        default="your Hubwarden administrator",
        metadata=_rule(
            check=_header_text,
            allowed="1 to 200 printable ASCII characters",
        ),
    )
    tree_page_size: int = field(default=1000, metadata=_rule(minimum=1, maximum=100_000))
    fetch: FetchSettings = field(default_factory=FetchSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    signing: SigningSettings = field(default_factory=SigningSettings)

    @property
    def effective_database_url(self) -> str:
        """`database_url`, or the SQLite file in the data directory when it is unset."""
        if self.database_url is not None:
            return self.database_url
        return f"{SQLITE_DRIVER}:///{self.data_dir / 'hubwarden.db'}"


SECTIONS: dict[str, type[typing.Any]] = {
    "fetch": FetchSettings,
    "ingest": IngestSettings,
    "scan": ScanSettings,
    "policy": PolicySettings,
    "admin": AdminSettings,
    "notify": NotifySettings,
    "watch": WatchSettings,
    "metrics": MetricsSettings,
    "store": StoreSettings,
    "signing": SigningSettings,
}


# -- where a value came from --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where one raw value came from; environment values are text to be parsed."""

    source: str
    subject: str
    is_text: bool


def _file_origin(path: Path, key: str) -> _Origin:
    return _Origin(str(path), f'{path}: key "{key}"', is_text=False)


def _env_origin(variable: str) -> _Origin:
    return _Origin(variable, f"environment variable {variable}", is_text=True)


def _flag_origin(key: str, value: object) -> _Origin:
    flag = "--" + key.replace(".", "-").replace("_", "-")
    return _Origin(flag, f"option {flag}", is_text=isinstance(value, str))


@dataclass(frozen=True, slots=True)
class _Key:
    """One setting: its section ("" for top level), name, type and rule."""

    section: str
    name: str
    hint: typing.Any
    rule: _Rule
    default: object

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def env_variable(self) -> str:
        return ENV_PREFIX + self.dotted.replace(".", "_").upper()


def _keys_of(cls: type[typing.Any], section: str) -> dict[str, _Key]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: _Key(section, f.name, hints[f.name], f.metadata["rule"], f.default)
        for f in dataclasses.fields(cls)
        if f.name not in SECTIONS
    }


def _all_keys() -> dict[str, dict[str, _Key]]:
    keys = {"": _keys_of(Settings, "")}
    keys.update({name: _keys_of(cls, name) for name, cls in SECTIONS.items()})
    return keys


def env_variables() -> dict[str, str]:
    """Every setting's environment variable → its dotted key (`HUBWARDEN_SCAN_WORKERS` →
    `scan.workers`)."""
    return {k.env_variable: k.dotted for keys in _all_keys().values() for k in keys.values()}


# -- converting one raw value -------------------------------------------------------------------


def _describe(key: _Key) -> str:
    """What is allowed for a key, in words, with its default as an example."""
    rule, hint = key.rule, _without_none(key.hint)
    if rule.allowed:
        return rule.allowed
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    if hint is bool:
        return "true or false"
    kind = "a whole number" if hint is int else "a number"
    for suffix, unit in (("_s", "seconds"), ("_bytes", "bytes"), ("_mb", "megabytes")):
        if key.name.endswith(suffix):
            kind += f" of {unit}"
    low = "greater than 0 and at most" if rule.above_zero else f"from {_number(rule.minimum)} to"
    return f"{kind} {low} {_number(rule.maximum)}, e.g. {_number(key.default)}"


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _without_none(hint: typing.Any) -> typing.Any:
    if isinstance(hint, types.UnionType):
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return inner
    return hint


def _bad(key: _Key, origin: _Origin, raw: object) -> ConfigError:
    value = "(hidden)" if key.rule.sensitive else _quoted(raw)
    allowed = _describe(key)
    return ConfigError(
        f"{origin.subject} is {value}; expected {allowed}",
        source=origin.source,
        key=key.dotted,
        value=value,
        allowed=allowed,
    )


def _quoted(raw: object) -> str:
    """A value as the user wrote it: strings quoted, booleans in TOML's spelling."""
    if isinstance(raw, str):
        return f'"{shown(raw)}"'
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return shown(raw)


def _convert(key: _Key, origin: _Origin, raw: object) -> object:
    """The typed, checked value of one setting, or ConfigError."""
    hint = _without_none(key.hint)
    optional = hint is not key.hint
    if optional and raw == "":
        return None
    try:
        value = _parse_text(hint, raw) if origin.is_text else _typed(hint, raw)
        value = _within_bounds(key.rule, value)
        if isinstance(value, str) and (_CONTROL.search(value) or len(value) > MAX_TEXT_CHARS):
            raise ValueError(value)
        return key.rule.check(value) if key.rule.check else value
    except (ValueError, TypeError):
        raise _bad(key, origin, raw) from None


def _parse_text(hint: typing.Any, raw: object) -> object:
    """An environment (or string flag) value: text parsed into the key's type."""
    text = str(raw).strip()
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if hint == tuple[str, ...]:
        return _typed(hint, [item.strip() for item in text.split(",") if item.strip()])
    return _typed(hint, text)


def _typed(hint: typing.Any, raw: object) -> object:
    """A TOML (or typed flag) value: checked against the key's type, never guessed."""
    if hint is bool or hint is str:
        return _instance(raw, hint)
    if hint is int:
        return _instance(raw, int, bool)
    if hint is float:
        return float(_instance(raw, (int, float), bool))  # type: ignore[arg-type]
    if hint is Path:
        text = str(_instance(raw, (str, Path)))
        if not text or "\x00" in text:
            raise ValueError(text)
        return Path(text).expanduser().resolve()
    if hint is Secret:
        return Secret(str(_instance(raw, str)))
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return hint(str(_instance(raw, str)).lower())
    if hint == tuple[str, ...]:
        items = _instance(raw, (list, tuple))
        if len(items) > MAX_LIST_ITEMS:  # type: ignore[arg-type]
            raise ValueError(raw)
        return tuple(str(_instance(item, str)) for item in items)  # type: ignore[attr-defined]
    if hint == tuple[TrustedSigner, ...]:
        return _trusted_signers(raw)
    raise TypeError(hint)  # a field whose type this module does not handle: a bug, caught by tests


def _instance(raw: object, kinds: type | tuple[type, ...], refused: type | None = None) -> object:
    if not isinstance(raw, kinds) or (refused is not None and isinstance(raw, refused)):
        raise TypeError(raw)
    return raw


def _within_bounds(rule: _Rule, value: object) -> object:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if not math.isfinite(value):
        raise ValueError(value)
    if rule.above_zero and value <= 0:
        raise ValueError(value)
    if rule.minimum is not None and value < rule.minimum:
        raise ValueError(value)
    if rule.maximum is not None and value > rule.maximum:
        raise ValueError(value)
    return value


# -- reading the three layers -------------------------------------------------------------------

_Layer = Iterator[tuple[_Key, _Origin, object]]


def _unknown(subject: str, name: str, choices: list[str], *, source: str) -> ConfigError:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    if len(choices) <= MAX_CHOICES_SHOWN:
        allowed = "one of " + ", ".join(sorted(choices))
    else:
        allowed = "a setting listed in config.example.toml"
    return ConfigError(
        f'{subject} "{shown(name)}" is not a setting{hint}; expected {allowed}',
        source=source,
        key=name,
        value=shown(name),
        allowed=allowed,
    )


def _read_file(path: Path) -> dict[str, typing.Any]:
    """The parsed TOML of the config file, or ConfigError saying why it cannot be used."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"config file {path}: cannot be read ({exc.strerror}); check the path given by "
            f"--config or {CONFIG_FILE_VARIABLE}",
            source=str(path),
        ) from exc
    if len(data) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(
            f"config file {path}: larger than {MAX_CONFIG_FILE_BYTES} bytes; is it the right file?",
            source=str(path),
        )
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"config file {path}: not valid TOML ({exc}); fix the file", source=str(path)
        ) from exc


def _file_layer(path: Path, keys: dict[str, dict[str, _Key]]) -> _Layer:
    document = _read_file(path)
    for name, value in document.items():
        if name not in SECTIONS:
            yield _known(keys, "", name, path), _file_origin(path, name), value
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f'{path}: key "{name}" must be a table ([{name}]), not a value',
                source=str(path),
                key=name,
                value=_quoted(value),
                allowed=f"a [{name}] table",
            )
        for sub, raw in value.items():
            yield _known(keys, name, sub, path), _file_origin(path, f"{name}.{sub}"), raw


def _known(keys: dict[str, dict[str, _Key]], section: str, name: str, path: Path) -> _Key:
    table = keys[section]
    if name not in table:
        where = f"{path}: key in [{section}]" if section else f"{path}: key"
        choices = list(table) + ([] if section else list(SECTIONS))
        raise _unknown(where, name, choices, source=str(path))
    return table[name]


def _env_layer(env: Mapping[str, str], keys: dict[str, dict[str, _Key]]) -> _Layer:
    by_variable = {k.env_variable: k for table in keys.values() for k in table.values()}
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_FILE_VARIABLE:
            continue
        if variable.startswith(NON_SETTING_PREFIXES):
            continue
        if variable not in by_variable:
            raise _unknown("environment variable", variable, list(by_variable), source=variable)
        yield by_variable[variable], _env_origin(variable), env[variable]


def _flag_layer(overrides: Mapping[str, object], keys: dict[str, dict[str, _Key]]) -> _Layer:
    for dotted, raw in overrides.items():
        if raw is None:
            continue
        section, _, name = dotted.rpartition(".")
        table = keys.get(section, {})
        if name not in table:
            raise _unknown(
                "option",
                dotted,
                [k.dotted for t in keys.values() for k in t.values()],
                source=dotted,
            )
        yield table[name], _flag_origin(dotted, raw), raw


def _check_secret_file(path: Path, values: dict[str, dict[str, object]]) -> None:
    """A config file holding a token must not be readable by every user (as devpi does)."""
    if values["fetch"].get("token") is None:
        return
    mode = path.stat().st_mode
    if mode & stat.S_IROTH:
        raise ConfigError(
            f"config file {path} holds fetch.token but every user can read it "
            f"(mode {stat.S_IMODE(mode):o}); run chmod o-r on it, or pass the token in "
            f"{TOKEN_FALLBACK_VARIABLE} instead",
            source=str(path),
            key="fetch.token",
        )


def load_settings(
    config_file: Path | None, env: Mapping[str, str], overrides: Mapping[str, object]
) -> Settings:
    """Settings from defaults, then the TOML file, then `env`'s `HUBWARDEN_*` variables, then
    `overrides` (CLI flags by dotted key; None values are ignored).

    Raises ConfigError naming the file and key, the variable or the flag at fault.
    """
    keys = _all_keys()
    values: dict[str, dict[str, object]] = {section: {} for section in keys}
    if config_file is not None:
        for key, origin, raw in _file_layer(config_file, keys):
            values[key.section][key.name] = _convert(key, origin, raw)
        _check_secret_file(config_file, values)
    for layer in (_env_layer(env, keys), _flag_layer(overrides, keys)):
        for key, origin, raw in layer:
            values[key.section][key.name] = _convert(key, origin, raw)
    token_fallback = env.get(TOKEN_FALLBACK_VARIABLE, "")
    if "token" not in values["fetch"] and token_fallback:
        token_key = keys["fetch"]["token"]
        origin = _env_origin(TOKEN_FALLBACK_VARIABLE)
        values["fetch"]["token"] = _convert(token_key, origin, token_fallback)
    values[""].setdefault("data_dir", DEFAULT_DATA_DIR.resolve())
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    top = typing.cast(dict[str, typing.Any], values[""])
    return Settings(**top, **sections)


def load_policy_file(path: Path, base: PolicySettings) -> PolicySettings:
    """`base` overlaid with a separate policy file: TOML holding `[policy]` keys, at the top level
    or in a `[policy]` table (`file` itself excepted).

    Raises ConfigError naming the file and key at fault, as for the main config file.
    """
    document = _read_file(path)
    table = document.get("policy", document) if set(document) <= {"policy"} else document
    if not isinstance(table, dict):
        raise ConfigError(
            f'{path}: key "policy" must be a table ([policy])', source=str(path), key="policy"
        )
    keys = {name: key for name, key in _keys_of(PolicySettings, "policy").items() if name != "file"}
    values: dict[str, object] = {}
    for name, raw in table.items():
        if name not in keys:
            raise _unknown(f"{path}: key in [policy]", name, list(keys), source=str(path))
        values[name] = _convert(keys[name], _file_origin(path, f"policy.{name}"), raw)
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]
