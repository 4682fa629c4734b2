"""Format detection by content, never by name."""

from __future__ import annotations

import pickle

import pytest

from scanners.detect import FileFormat, detect_format
from tests.scanners.corpus import EVIL, zip_bytes


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (EVIL, "model.safetensors", FileFormat.PICKLE),
        (pickle.dumps([1], protocol=4), "weights.txt", FileFormat.PICKLE),
        (zip_bytes([("a", b"b")]), "model.bin", FileFormat.ZIP),
        (b"GGUF\x03\x00\x00\x00" + b"\0" * 16, "notes.txt", FileFormat.GGUF),
        (b"\x93NUMPY\x01\x00", "x.bin", FileFormat.NUMPY),
        (b'{"a": 1}', "config.json", FileFormat.JSON),
        (b"# Title\nclass Foo:\n    pass\n", "README.md", FileFormat.TEXT),
        (b"\x0a\x05hello\x10\x01\x18\x02", "tokenizer.model", FileFormat.PROTOBUF),
        (bytes(range(1, 200)), "x.bin", FileFormat.UNKNOWN),
        (b"", "x.bin", FileFormat.EMPTY),
    ],
)
def test_detect_format_by_content(data: bytes, name: str, expected: FileFormat) -> None:
    assert detect_format(data, len(data), name) == expected


def test_detect_payload_before_breakage_is_still_pickle() -> None:
    data = EVIL[:-1] + b"\xfftext that follows"
    assert detect_format(data, len(data), "notes.txt") == FileFormat.PICKLE


def test_detect_python_source_starting_with_class_is_text() -> None:
    data = b"class Model:\n    def forward(self):\n        return 1\n"
    assert detect_format(data, len(data), "modeling.py") == FileFormat.TEXT


def test_detect_labels_text_reading_as_global_lines_is_text() -> None:
    data = b"cat\ndog\nbird\nfish\n"
    assert detect_format(data, len(data), "labels.txt") == FileFormat.TEXT


def test_detect_text_pickle_calling_unknown_module_before_breakage_is_pickle() -> None:
    data = b"cmypkg.tools\nrun\n(S'x'\ntR\nand some text"
    assert detect_format(data, len(data), "notes.txt") == FileFormat.PICKLE


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfb\x90\x64" + b"\x00" * 413 + b"\xff\xfb\x90\x64" + b"\x00" * 100,  # MP3 frames
        b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"\x00" * 40,  # Arrow IPC stream
    ],
)
def test_detect_headerless_media_and_arrow_stream_are_data(data: bytes) -> None:
    assert detect_format(data, len(data), "x.bin") == FileFormat.DATA
