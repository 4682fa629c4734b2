"""Which format a file is, told by its content (magic bytes and structure), never by its name.

The name is only a hint where content cannot decide (a Python file and a text file look alike);
it never makes a file look safer. A pickle named `.safetensors`, a zip named `.bin` and a GGUF named
`.txt` are all recognised for what they are.
"""

from __future__ import annotations

import enum
import json
import struct

from scanners.allowlist import GlobalVerdict
from scanners.limits import PickleLimits
from scanners.pickles import OPCODE_BYTES, PickleWalker

# PROTO then the legacy torch magic number 0x1950a86a20f9469cfc6c as a LONG1, then STOP
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e"


class FileFormat(enum.StrEnum):
    """Formats the dispatcher knows. The value is what a report's `format` says."""

    EMPTY = "empty"
    SAFETENSORS = "safetensors"
    GGUF = "gguf"
    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    SEVEN_Z = "7z"
    ZSTD = "zstd"
    ZLIB = "zlib"  # joblib's default compressor
    LZMA = "lzma"
    LZ4 = "lz4"
    PICKLE = "pickle"
    TORCH_LEGACY = "pytorch-legacy"
    NUMPY = "numpy"
    HDF5 = "hdf5"
    ONNX = "onnx"
    PROTOBUF = "protobuf"
    MSGPACK = "msgpack"
    JSON = "json"
    TEXT = "text"
    DATA = "data"  # a known data-only format (images, audio, parquet, arrow...)
    UNKNOWN = "unknown"
    # refined by the scanners once the content is read
    OPAQUE = "opaque"  # unknown binary in which no loader would find anything to open
    TORCH_ZIP = "pytorch-zip"
    TORCH_TAR = "pytorch-tar"
    JOBLIB = "joblib"
    NPZ = "npz"
    KERAS = "keras"
    PYTHON = "python"
    JINJA = "jinja"
    TF_GRAPH = "tensorflow"  # a SavedModel, MetaGraph or frozen GraphDef among protobuf files
    TORCHSCRIPT = "torchscript"  # a torch zip with TorchScript code (torch.jit.save)
    NEMO = "nemo"  # a tar (or tar.gz) holding NeMo's model_config.yaml
    SKOPS = "skops"  # a zip holding skops' schema.json


# Formats only a scanner names, once it has read the content: detection never returns them, and
# no scanner is registered for them (`scanners.registry` takes each format detection names).
REFINED_FORMATS = frozenset(
    {
        FileFormat.OPAQUE,
        FileFormat.TORCH_ZIP,
        FileFormat.TORCH_TAR,
        FileFormat.JOBLIB,
        FileFormat.NPZ,
        FileFormat.KERAS,
        FileFormat.PYTHON,
        FileFormat.JINJA,
        FileFormat.TF_GRAPH,
        FileFormat.TORCHSCRIPT,
        FileFormat.NEMO,
        FileFormat.SKOPS,
    }
)

# Data-only formats: nothing in them is executed by their usual readers.
_DATA_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"\xff\xd8\xff"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"RIFF"),
    (0, b"ID3"),
    (0, b"fLaC"),
    (0, b"OggS"),
    (0, b"PAR1"),
    (0, b"ARROW1"),
    (0, b"%PDF"),
    (4, b"ftyp"),
    (4, b"TFL3"),
    (0, b"SQLite format 3\x00"),
    (0, b"ggjt"),
    (0, b"ggml"),
    (0, b"ggla"),
    (0, b"lmgg"),
    (0, b"BM"),
)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PROBE_LIMITS = PickleLimits(max_opcodes=1 << 20)
_ACTIVE_CODES = frozenset(
    {"PICKLE_GLOBAL_DYNAMIC", "PICKLE_MUTATES_GLOBAL", "PICKLE_INDIRECT_CALL"}
)


def _is_dotted_identifier(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def detect_format(prefix: bytes, size: int, name: str = "") -> FileFormat:
    """The format of a file whose first bytes are `prefix` and whose full size is `size`."""
    if size == 0:
        return FileFormat.EMPTY
    binary = _binary_format(prefix, size)
    if binary is not None:
        return binary
    if _looks_like_pickle(prefix, size):
        return FileFormat.PICKLE
    text = _text_format(prefix, size, name)
    if text is not None:
        return text
    if _looks_like_protobuf(prefix, size):
        return FileFormat.ONNX if name.lower().endswith(".onnx") else FileFormat.PROTOBUF
    if _looks_like_msgpack(prefix):
        return FileFormat.MSGPACK
    return FileFormat.UNKNOWN


def _binary_format(prefix: bytes, size: int) -> FileFormat | None:
    if prefix.startswith(b"GGUF"):
        return FileFormat.GGUF
    if _looks_like_safetensors(prefix, size):
        return FileFormat.SAFETENSORS
    if prefix[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return FileFormat.ZIP
    if prefix.startswith(TORCH_LEGACY_MAGIC):
        return FileFormat.TORCH_LEGACY
    if prefix.startswith(b"\x93NUMPY"):
        return FileFormat.NUMPY
    if prefix.startswith(b"\x1f\x8b"):
        return FileFormat.GZIP
    if prefix.startswith(b"BZh") and len(prefix) > 3 and prefix[3:4].isdigit():
        return FileFormat.BZIP2
    if prefix.startswith(b"\xfd7zXZ\x00"):
        return FileFormat.XZ
    if prefix.startswith(b"7z\xbc\xaf\x27\x1c"):
        return FileFormat.SEVEN_Z
    if prefix.startswith(b"\x28\xb5\x2f\xfd"):
        return FileFormat.ZSTD
    if prefix.startswith(b"\x04\x22\x4d\x18"):
        return FileFormat.LZ4
    if prefix.startswith(b"\x5d\x00\x00"):
        return FileFormat.LZMA
    if len(prefix) >= 2 and prefix[0] == 0x78 and (prefix[0] * 256 + prefix[1]) % 31 == 0:
        return FileFormat.ZLIB
    if len(prefix) >= 262 and prefix[257:262] == b"ustar":
        return FileFormat.TAR
    if _HDF5_MAGIC in (prefix[0:8], prefix[512:520], prefix[1024:1032], prefix[2048:2056]):
        return FileFormat.HDF5
    for offset, magic in _DATA_MAGIC:
        if prefix[offset : offset + len(magic)] == magic:
            return FileFormat.DATA
    if _looks_like_mpeg_audio(prefix) or _looks_like_arrow_stream(prefix, size):
        return FileFormat.DATA
    if _looks_like_tfrecord(prefix, size):
        return FileFormat.DATA
    return None


def _looks_like_mpeg_audio(prefix: bytes) -> bool:
    """MP3 without an ID3 tag, or AAC in ADTS: frame sync (11 bits set), a valid header, and
    (when the prefix holds it) a second sync right after the first frame."""
    if len(prefix) < 4 or prefix[0] != 0xFF or prefix[1] & 0xE0 != 0xE0:
        return False
    version, layer = (prefix[1] >> 3) & 3, (prefix[1] >> 1) & 3
    if layer == 0:  # ADTS (AAC): 12-bit sync, the frame length in bits 30..42
        if len(prefix) < 7:  # a 7-byte header (fuzzing, issue 13: `ff e0 e1 42` read past it)
            return False
        length = ((prefix[3] & 3) << 11) | (prefix[4] << 3) | (prefix[5] >> 5)
        return prefix[1] & 0xF6 == 0xF0 and length >= 7 and _sync_at(prefix, length)
    bitrate_index, rate_index = prefix[2] >> 4, (prefix[2] >> 2) & 3
    if version == 1 or bitrate_index in (0, 15) or rate_index == 3:
        return False
    if version == 3 and layer == 1:  # MPEG-1 Layer III: check the next frame's sync
        bitrate = _MP3_BITRATES[bitrate_index] * 1000
        rate = (44100, 48000, 32000)[rate_index]
        length = 144 * bitrate // rate + ((prefix[2] >> 1) & 1)
        return _sync_at(prefix, length)
    return True


_MP3_BITRATES = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0)


def _sync_at(prefix: bytes, at: int) -> bool:
    if at + 2 > len(prefix):
        return True  # the prefix ends first: the header alone decides
    return prefix[at] == 0xFF and prefix[at + 1] & 0xE0 == 0xE0


def _looks_like_arrow_stream(prefix: bytes, size: int) -> bool:
    """Arrow IPC stream (Hugging Face `datasets` cache `.arrow` files): the continuation marker,
    then the length of a flatbuffer Message that fits in the file."""
    if len(prefix) < 16 or prefix[:4] != b"\xff\xff\xff\xff":
        return False
    length: int = struct.unpack_from("<i", prefix, 4)[0]
    return 8 <= length <= size - 8 and length % 8 == 0


def _looks_like_tfrecord(prefix: bytes, size: int) -> bool:
    """TFRecord (TensorBoard `events.out.tfevents.*`): a u64 length whose masked CRC32C follows."""
    if len(prefix) < 12:
        return False
    length: int = struct.unpack_from("<Q", prefix, 0)[0]
    masked: int = struct.unpack_from("<I", prefix, 8)[0]
    return length + 16 <= size and _masked_crc32c(prefix[:8]) == masked


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _looks_like_safetensors(prefix: bytes, size: int) -> bool:
    if len(prefix) < 9 or size < 9:
        return False
    (length,) = struct.unpack_from("<Q", prefix, 0)
    # An oversized length still means "safetensors": its scanner refuses the lie.
    return length >= 2 and prefix[8:9] == b"{"


class PicklePrefix(enum.Enum):
    """What walking a file's start as a pickle says (for files detected as something else)."""

    NOT_PICKLE = "not-pickle"  # the unpickler fails before importing anything not allowed
    IMPORTS = "imports"  # it imports a global that is not allowed: a polyglot carrying a pickle
    UNDECIDED = "undecided"  # the bytes ran out first: the whole file must be walked


# What, besides a global off the allow-list, makes a pickle run something.
_RISKY_CODES = frozenset(
    {
        "PICKLE_RECONSTRUCTOR_MISUSE",
        "PICKLE_CODECS_MISUSE",
        "PICKLE_CALLS_ARGUMENT",
        "PICKLE_MUTATES_GLOBAL",
        "PICKLE_NESTED_LOAD_DYNAMIC",
    }
)


def pickle_prefix(
    data: bytes | bytearray | memoryview | object,
    end: int,
    size: int,
    limits: PickleLimits = _PROBE_LIMITS,
) -> PicklePrefix:
    """Walk `data[:end]` (the start of a file of `size` bytes) as `pickle.load` would.

    A file in another format (an image, a tar, an HDF5 user block...) can also be a valid
    pickle; only a walk that imports something off the allow-list (or misuses an allowed
    function) makes it one worth scanning: random binary data fails within a few bytes, and a
    pickle that only builds values is harmless even when loaded."""
    if end == 0 or data[0] not in OPCODE_BYTES:  # type: ignore[index]
        return PicklePrefix.NOT_PICKLE
    walker = PickleWalker(data, end, limits)  # type: ignore[arg-type]
    walker.walk_all(0)
    result = walker.result
    if result.nested or any(f.code in _RISKY_CODES for f in result.findings):
        return PicklePrefix.IMPORTS
    named = [
        g
        for g in result.globals
        if g.verdict != GlobalVerdict.ALLOWED
        and _is_dotted_identifier(g.module)
        and _is_dotted_identifier(g.name)
    ]
    if _is_text(bytes(data[: min(end, 65536)]), size):  # type: ignore[index]
        # text reads as GLOBAL lines ("cat\ndog\n"): only a denied import or a call counts
        named = [g for g in named if g.verdict == GlobalVerdict.DENIED or g.dotted in result.calls]
    if named:
        return PicklePrefix.IMPORTS
    if end < size and _ran_out(walker):
        return PicklePrefix.UNDECIDED
    if any(f.code == "PICKLE_LIMIT_EXCEEDED" for f in result.findings):
        return PicklePrefix.UNDECIDED
    return PicklePrefix.NOT_PICKLE


def _ran_out(walker: PickleWalker) -> bool:
    """The walk stopped only because the bytes it was given ended (no structural error)."""
    reasons = [f.details.get("reason") for f in walker.result.findings]
    return any(
        isinstance(r, str) and ("ends" in r or "longer than the data" in r or "newline" in r)
        for r in reasons
    ) and all(f.code == "PICKLE_MALFORMED" for f in walker.result.findings)


def _looks_like_pickle(prefix: bytes, size: int) -> bool:
    """A pickle when the walker runs through the prefix without an error it would not meet on a
    longer prefix (a pickle is loadable only if it parses from its first byte)."""
    if prefix[:1] == b"\x80" and len(prefix) > 1 and prefix[1] <= 5:
        return True
    walker = PickleWalker(prefix, len(prefix), _PROBE_LIMITS)
    end = walker.walk_one(0)
    if end is not None:
        return True
    # A payload placed before a deliberate breakage still runs: a stream that imported a real
    # module path or made a suspicious move before its error is a (malformed) pickle. Plain text
    # ("cat\ndog\nbird\n", a labels file) reads as GLOBAL `at.dog` and then breaks: in text, only
    # a denied import or a call before the break counts.
    named = [
        g
        for g in walker.result.globals
        if _is_dotted_identifier(g.module) and g.name.isidentifier()
    ]
    if _is_text(prefix, size):
        if any(g.verdict == GlobalVerdict.DENIED for g in named) or any(
            _is_dotted_identifier(called) for called in walker.result.calls
        ):
            return True
    elif named:
        return True
    if any(f.code in _ACTIVE_CODES for f in walker.result.findings):
        return True
    if len(prefix) >= size:
        return False
    # Ran out of prefix mid-stream (no structural error seen): a longer pickle.
    return _ran_out(walker)


_CONTROL_BYTES = bytes(range(0, 9)) + bytes(range(14, 27)) + bytes(range(28, 32))


def _is_text(prefix: bytes, size: int) -> bool:
    if prefix.translate(None, _CONTROL_BYTES) != prefix:
        return False
    try:
        (prefix if len(prefix) >= size else _trim_partial_utf8(prefix)).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text_format(prefix: bytes, size: int, name: str) -> FileFormat | None:
    if prefix.translate(None, _CONTROL_BYTES) != prefix:  # control bytes: binary, not text
        return None
    sample = prefix if len(prefix) >= size else _trim_partial_utf8(prefix)
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return None
    stripped = text.lstrip("\ufeff \t\r\n")
    looks_json = stripped[:1] in ("{", "[")
    whole = len(prefix) >= size
    if looks_json and (
        (whole and _is_json(text)) or (not whole and name.lower().endswith(".json"))
    ):
        return FileFormat.JSON
    return FileFormat.TEXT


def _trim_partial_utf8(prefix: bytes) -> bytes:
    """Drop a multi-byte character cut at the end of a prefix."""
    for cut in range(1, 4):
        if len(prefix) > cut and prefix[-cut] & 0xC0 == 0xC0:
            return prefix[:-cut]
    return prefix


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _looks_like_protobuf(prefix: bytes, size: int) -> bool:
    """At least three well-formed protobuf fields in a row from the start (ONNX, sentencepiece)."""
    pos = 0
    fields = 0
    limit = min(len(prefix), size)
    while pos < limit and fields < 8:
        key, pos = _varint(prefix, pos)
        if key is None or key >> 3 == 0:
            return False
        wire = key & 7
        if wire == 0:
            value, pos = _varint(prefix, pos)
            if value is None:
                return False
        elif wire == 2:
            length, pos = _varint(prefix, pos)
            if length is None or pos + length > size:
                return False
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            return False
        fields += 1
    return fields >= 3 or (fields >= 1 and pos == size)


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(data):
            return None, pos
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    return None, pos


def _looks_like_msgpack(prefix: bytes) -> bool:
    """Flax `.msgpack` checkpoints: a top-level map whose first key is a string."""
    if not prefix:
        return False
    first = prefix[0]
    if 0x80 <= first <= 0x8F:
        key_at = 1
    elif first == 0xDE:
        key_at = 3
    elif first == 0xDF:
        key_at = 5
    else:
        return False
    return len(prefix) > key_at and (
        0xA0 <= prefix[key_at] <= 0xBF or prefix[key_at] in (0xD9, 0xDA)
    )
