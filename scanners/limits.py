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
class SafetensorsLimits:
    """Bounds on what a header may ask of us."""

    max_header_bytes: int = 100_000_000  # the Rust crate's MAX_HEADER_SIZE
    max_entries: int = 2_000_000  # JSON objects in the header (tensors + metadata)
    max_dims: int = 64
    max_findings: int = 20

    def __post_init__(self) -> None:
        if self.max_header_bytes <= 0 or self.max_entries <= 0 or self.max_dims <= 0:
            raise ValueError("safetensors limits must be positive")


@dataclass(frozen=True, slots=True)
class GGUFLimits:
    """Bounds on what a header may ask of us."""

    max_header_bytes: int = 64 * 1024 * 1024  # Llama-3's 128k vocab + merges is ~10 MB
    max_string_bytes: int = 1024 * 1024 * 1024  # GGUF_MAX_STRING_LENGTH
    max_array_elements: int = 1024 * 1024 * 1024  # GGUF_MAX_ARRAY_ELEMENTS
    max_array_depth: int = 3
    max_key_bytes: int = 65_536
    max_tensor_name_bytes: int = 4_096
    max_kept_string_bytes: int = 16 * 1024 * 1024  # chat templates we keep to inspect
    read_chunk_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_header_bytes < 64 or self.read_chunk_bytes <= 0 or self.max_array_depth < 1:
            raise ValueError("GGUF limits are too small")


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """Bounds on inspecting and rendering one template."""

    max_source_chars: int = 1_000_000
    max_render_s: float = 2.0
    max_render_lines: int = 2_000_000  # template code lines executed, over all renders
    max_output_chars: int = 1_000_000
    max_operand_len: int = 100_000  # string/list length produced by *, %, + and filters
    max_int_arg: int = 100_000  # widths and counts passed to filters (center, indent…)
    max_fold_chars: int = 4_096
    max_findings: int = 20

    def __post_init__(self) -> None:
        if self.max_render_s <= 0 or self.max_render_lines <= 0 or self.max_source_chars <= 0:
            raise ValueError("template limits must be positive")


@dataclass(frozen=True, slots=True)
class KerasLimits:
    """Bounds on reading one Keras model's config."""

    max_config_bytes: int = 64 * 1024 * 1024
    max_members: int = 10_000
    max_nodes: int = 2_000_000  # JSON values walked
    max_depth: int = 200
    max_findings: int = 40
    h5_memory_bytes: int = 512 * MIB  # what the h5py child may map beyond its start
    h5_cpu_s: int = 10
    h5_wall_s: float = 20.0

    def __post_init__(self) -> None:
        if self.max_config_bytes <= 0 or self.max_nodes <= 0 or self.max_depth <= 0:
            raise ValueError("keras limits must be positive")


@dataclass(frozen=True, slots=True)
class OnnxLimits:
    """Bounds on walking one ONNX file."""

    max_fields: int = 5_000_000
    max_depth: int = 64  # nested subgraphs (If/Loop/Scan bodies)
    max_string_bytes: int = 4_096
    block_bytes: int = 1024 * 1024
    max_findings: int = 40

    def __post_init__(self) -> None:
        if self.max_fields <= 0 or self.max_depth <= 0 or self.block_bytes < 16:
            raise ValueError("ONNX limits are too small")


@dataclass(frozen=True, slots=True)
class NemoLimits:
    """Bounds on one YAML config."""

    max_config_bytes: int = 1024 * 1024  # NeMo configs are tens of KiB; parsing costs ~1 s/MiB
    max_flow_depth: int = 64  # [ { nesting, checked before parsing
    max_indent_chars: int = 1024  # block nesting (indentation), checked before parsing
    max_nodes: int = 500_000  # distinct YAML nodes walked
    max_expanded_nodes: int = 5_000_000  # nodes once aliases are expanded (what OmegaConf builds)
    max_listed: int = 50

    def __post_init__(self) -> None:
        if min(self.max_config_bytes, self.max_flow_depth, self.max_nodes) <= 0:
            raise ValueError("NeMo limits must be positive")


@dataclass(frozen=True, slots=True)
class SkopsLimits:
    """Bounds on one `schema.json`."""

    max_schema_bytes: int = 64 * 1024 * 1024
    max_nodes: int = 2_000_000  # JSON values walked
    max_depth: int = 400
    max_listed: int = 50

    def __post_init__(self) -> None:
        if min(self.max_schema_bytes, self.max_nodes, self.max_depth, self.max_listed) <= 0:
            raise ValueError("skops limits must be positive")


@dataclass(frozen=True, slots=True)
class TfGraphLimits:
    """Bounds on walking one TensorFlow graph file."""

    max_fields: int = 8_000_000  # a 200k-node graph is ~1.5M fields (about 2 s)
    max_string_bytes: int = 4096
    max_findings: int = 40
    max_ops_listed: int = 50  # distinct (op, where) pairs kept in one finding's details

    def __post_init__(self) -> None:
        if self.max_fields <= 0 or self.max_string_bytes < 64 or self.max_findings <= 0:
            raise ValueError("TensorFlow graph limits are too small")


@dataclass(frozen=True, slots=True)
class TorchScriptLimits:
    """Bounds on checking one archive's code."""

    max_source_bytes: int = 16 * 1024 * 1024  # all code members together
    max_nodes: int = 2_000_000  # AST nodes visited over the archive
    max_listed: int = 50

    def __post_init__(self) -> None:
        if self.max_source_bytes <= 0 or self.max_nodes <= 0 or self.max_listed <= 0:
            raise ValueError("TorchScript limits must be positive")


@dataclass(frozen=True, slots=True)
class RemoteCodeLimits:
    """Bounds on reading and parsing one Python file or config."""

    max_source_bytes: int = 8 * 1024 * 1024
    max_findings: int = 40
    max_auto_map_entries: int = 256
    max_templates: int = 64

    def __post_init__(self) -> None:
        if self.max_source_bytes <= 0 or self.max_findings <= 0:
            raise ValueError("remote code limits must be positive")


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Everything `scan_file` and `StreamScan` bound: one child per format scanner (each
    scanner reads only its own), plus the bounds shared by the dispatch itself."""

    pickle: PickleLimits = field(default_factory=PickleLimits)
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    fickling: FicklingLimits = field(default_factory=FicklingLimits)
    numpy: NumpyLimits = field(default_factory=NumpyLimits)
    safetensors: SafetensorsLimits = field(default_factory=SafetensorsLimits)
    gguf: GGUFLimits = field(default_factory=GGUFLimits)
    templates: TemplateLimits = field(default_factory=TemplateLimits)
    keras: KerasLimits = field(default_factory=KerasLimits)
    onnx: OnnxLimits = field(default_factory=OnnxLimits)
    nemo: NemoLimits = field(default_factory=NemoLimits)
    skops: SkopsLimits = field(default_factory=SkopsLimits)
    tf_graph: TfGraphLimits = field(default_factory=TfGraphLimits)
    torchscript: TorchScriptLimits = field(default_factory=TorchScriptLimits)
    remote_code: RemoteCodeLimits = field(default_factory=RemoteCodeLimits)
    detect_prefix_bytes: int = 64 * 1024  # detection looks at this much of the start
    max_text_bytes: int = 64 * MIB  # JSON / Python / Jinja read whole only up to this
    max_pickle_bytes: int = 4 * 1024 * MIB  # a pickle stream longer than this is not walked
    stream_memory_bytes: int = 64 * MIB  # StreamScan keeps this much in memory, then spools

    def __post_init__(self) -> None:
        if self.detect_prefix_bytes < 512:
            raise ValueError("ScanLimits.detect_prefix_bytes must be at least 512")


DEFAULT_LIMITS = ScanLimits()
