"""Header and data formats as format scanners: safetensors, GGUF, HDF5, ONNX, protobuf, opaque.

Header formats are judged by their header alone (the tensor bytes are never read); protobuf is
data (a sentencepiece tokenizer) unless it is a TensorFlow graph; binary `detect` cannot name is
opaque data when `scanners.opaque` finds nothing a loader could open in it, else `unknown`.
"""

from __future__ import annotations

from typing import BinaryIO

from scanners import gguf, keras, onnx, opaque, safetensors, tf_graph
from scanners.detect import FileFormat
from scanners.limits import ScanLimits
from scanners.report import Finding, Outcome, Severity
from scanners.scan_context import ScanContext, Scanned, mapped_view

SCANNER = "dispatch"  # FILE_EMPTY and FORMAT_UNKNOWN have always been the dispatch's findings
_FOREIGN_VERSION = "1"

# Files that are empty in real repos by convention; an empty file of any other name is what a
# truncated transfer or a loader-crashing placeholder looks like (issue 13: an empty `.pkl`).
_EMPTY_IS_NORMAL = frozenset(
    {"__init__.py", "py.typed", ".gitkeep", ".keep", ".gitignore", ".gitattributes"}
)
_EMPTY_IS_NORMAL_SUFFIXES = (".md", ".txt")


def scan_safetensors(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    limits = ctx.limits.safetensors
    fh.seek(0)
    return None, ctx.run_foreign(
        safetensors.SCANNER, _FOREIGN_VERSION, lambda: safetensors.scan(fh, size, name, limits)
    )


def scan_gguf(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    limits, template_limits = ctx.limits.gguf, ctx.limits.templates
    fh.seek(0)
    return None, ctx.run_foreign(
        gguf.SCANNER,
        _FOREIGN_VERSION,
        lambda: gguf.scan(fh, size, name, limits, template_limits),
    )


def scan_hdf5(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """An HDF5 file: a Keras model's config is read through h5py (attributes only)."""
    limits = ctx.limits.keras
    fh.seek(0)
    return None, ctx.run_foreign(
        keras.SCANNER,
        _FOREIGN_VERSION,
        lambda: keras.scan(fh, size, name, limits, ctx.scan_embedded),
    )


def scan_onnx(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    limits = ctx.limits.onnx
    fh.seek(0)
    return None, ctx.run_foreign(
        onnx.SCANNER, _FOREIGN_VERSION, lambda: onnx.scan(fh, size, name, limits)
    )


def safetensors_header_size(prefix: bytes, size: int, limits: ScanLimits) -> int | None:
    return safetensors.header_size(prefix, size, limits.safetensors)


def gguf_header_size(prefix: bytes, size: int, limits: ScanLimits) -> int | None:
    return gguf.header_size(prefix, size, limits.gguf)


def scan_protobuf(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """Protobuf is data (a sentencepiece tokenizer) unless it is a TensorFlow graph."""
    fh.seek(0)
    kind = tf_graph.graph_kind(fh.read(min(size, ctx.limits.detect_prefix_bytes)), size, name)
    if kind is None:
        return None, []
    ctx.ran(tf_graph.SCANNER, tf_graph.SCANNER_VERSION)
    return FileFormat.TF_GRAPH, tf_graph.scan(fh, size, name, kind, ctx.limits.tf_graph)


def scan_unknown(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """Opaque data, or unknown structure a loader could open (DESIGN.md rule 10)."""
    fh.seek(0)
    if tf_graph.graph_kind(fh.read(min(size, ctx.limits.detect_prefix_bytes)), size, name):
        # a graph whose first message outgrows detection's prefix, or one TensorFlow opens by
        # its name (saved_model.pb): walked as a graph, never "unknown" or "data"
        return scan_protobuf(fh, size, name, ctx)
    ctx.ran(opaque.SCANNER, opaque.SCANNER_VERSION)
    with mapped_view(fh, size) as data:
        structure = opaque.openable_structure(data, size, ctx.limits)
    if structure is None:
        return FileFormat.OPAQUE, [opaque.opaque_finding()]
    return None, [unknown_finding(structure)]


def unknown_finding(structure: opaque.Structure | None) -> Finding:
    why = (
        f"{structure.what}, which a loader could open"
        if structure is not None
        else "a check for formats hidden in it found one"
    )
    return Finding(
        SCANNER,
        "FORMAT_UNKNOWN",
        Severity.LOW,
        Outcome.REVIEW,
        f"the format of this binary file could not be told from its content, and it is not "
        f"opaque data: {why}; it is held until an admin looks at it",
        structure.details() if structure is not None else {},
    )


def scan_empty(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    base = name.rsplit("/", 1)[-1].lower()
    if base in _EMPTY_IS_NORMAL or base.endswith(_EMPTY_IS_NORMAL_SUFFIXES):
        return None, []
    return None, [
        Finding(
            SCANNER,
            "FILE_EMPTY",
            Severity.HIGH,
            Outcome.ERROR,
            "the file is empty: there is nothing to scan, and a loader expecting a model fails "
            "on it (a truncated transfer or a placeholder); it is held",
        )
    ]


def scan_data(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """Data-only formats (images, audio, parquet, msgpack...): nothing their readers execute."""
    return None, []
