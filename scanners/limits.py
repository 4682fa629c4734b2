"""Every bound the scanners enforce, in one place per concern.

Hostile files decide how much work a naive parser does; these frozen values decide instead. Each
class validates itself on creation so a configuration mistake fails at start-up, not mid-scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PickleLimits:
    """Bounds of the pickle opcode walker (per pickle stream, several pickles included)."""

    max_opcodes: int = 20_000_000
    max_memo_entries: int = 2_000_000
    max_memo_index: int = 1 << 26  # CPython grows its memo array to the index: refuse absurd ones
    max_stack_depth: int = 200_000  # stack items plus open MARKs
    # containers nested in what the pickle loads to (open MARKs too); pickle.dump recurses per
    # level, so what it writes stays near the recursion limit (1,000)
    max_nesting_depth: int = 10_000
    max_expanded_nodes: int = 1 << 24  # containers, shared references counted each time
    max_pickles: int = 10_000  # pickles one after the other in one stream
    max_kept_string_chars: int = 4096  # longer strings are tracked by length only
    max_tracked_items: int = 64  # dict/tuple content kept for argument checks (joblib, _codecs)
    max_reported_globals: int = 200

    def __post_init__(self) -> None:
        for name in (
            "max_opcodes",
            "max_memo_entries",
            "max_memo_index",
            "max_stack_depth",
            "max_nesting_depth",
            "max_expanded_nodes",
            "max_pickles",
            "max_kept_string_chars",
            "max_tracked_items",
            "max_reported_globals",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"PickleLimits.{name} must be positive")


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds for containers (zip, tar, gzip, npz, torch zips): zip bombs and nesting."""

    max_members: int = 100_000  # torch checkpoints have a storage record per tensor
    max_scanned_members: int = 10_000  # members other than torch storage records
    max_depth: int = 4  # an archive inside an archive inside ...
    max_total_bytes: int = 64 * 1024 * MIB  # uncompressed bytes read over one scan
    max_member_bytes: int = 16 * 1024 * MIB
    max_ratio: int = 200  # uncompressed / compressed, above a small-member grace
    ratio_grace_bytes: int = 1 * MIB
    max_name_bytes: int = 4096
    spool_memory_bytes: int = 32 * MIB  # a member larger than this is spooled to a temp file

    def __post_init__(self) -> None:
        if (
            min(
                self.max_members,
                self.max_scanned_members,
                self.max_depth,
                self.max_total_bytes,
                self.max_ratio,
            )
            <= 0
        ):
            raise ValueError("ArchiveLimits values must be positive")


@dataclass(frozen=True, slots=True)
class NumpyLimits:
    """Bounds of `.npy` headers (npz members too): `numpy.load` allocates what the header
    declares before it reads a byte of data, so the declaration is checked first."""

    max_itemsize_bytes: int = 64 * MIB  # one element of the dtype
    max_dimensions: int = 64  # numpy 2's own limit (32 before)

    def __post_init__(self) -> None:
        if self.max_itemsize_bytes <= 0 or self.max_dimensions <= 0:
            raise ValueError("NumpyLimits values must be positive")


@dataclass(frozen=True, slots=True)
class FicklingLimits:
    """Bounds of fickling's second opinion on a pickle that raised a finding (never on a clean
    file): the pickle it decompiles, the time it may take, the text kept."""

    max_pickle_bytes: int = 256 * 1024  # a larger pickle is not decompiled (said in the finding)
    max_seconds: float = 1.0
    max_chars: int = 4000

    def __post_init__(self) -> None:
        if self.max_pickle_bytes <= 0 or self.max_seconds <= 0 or self.max_chars <= 0:
            raise ValueError("FicklingLimits values must be positive")


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Everything `scan_file` and `StreamScan` bound."""

    pickle: PickleLimits = field(default_factory=PickleLimits)
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    fickling: FicklingLimits = field(default_factory=FicklingLimits)
    numpy: NumpyLimits = field(default_factory=NumpyLimits)
    detect_prefix_bytes: int = 64 * 1024  # detection looks at this much of the start
    max_text_bytes: int = 64 * MIB  # JSON / Python / Jinja read whole only up to this
    max_pickle_bytes: int = 4 * 1024 * MIB  # a pickle stream longer than this is not walked
    stream_memory_bytes: int = 64 * MIB  # StreamScan keeps this much in memory, then spools

    def __post_init__(self) -> None:
        if self.detect_prefix_bytes < 512:
            raise ValueError("ScanLimits.detect_prefix_bytes must be at least 512")


DEFAULT_LIMITS = ScanLimits()
