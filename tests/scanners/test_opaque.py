"""Opaque data (DESIGN.md rule 10): binary no loader would execute is released with one INFO
finding; unknown structure a loader could open, wherever that loader looks, stays held."""

from __future__ import annotations

import io
import json
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from scanners import Outcome, Severity, scan_file
from scanners.cli import main
from scanners.detect import FileFormat, detect_format
from scanners.opaque import (
    Protobuf,
    hdf5_offsets,
    protobuf_parse,
    tar_checksum_holds,
)
from scanners.pickles import OPCODE_BYTES
from tests.scanners import corpus_opaque as samples
from tests.scanners.corpus import BAD, EVIL, HELD, reduce_global, torch_zip_with
from tests.scanners.corpus_headers import pb_field

OPAQUE_NAMES = sorted(samples.opaque_samples())
HELD_NAMES = sorted(samples.held_samples())
MESSAGE = (
    "opaque data: no pickle, archive or other container a loader would open was found at any "
    "offset a loader reads"
)


@pytest.fixture(scope="module")
def opaque_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return samples.write_samples(tmp_path_factory.mktemp("opaque"), samples.opaque_samples())


@pytest.fixture(scope="module")
def held_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return samples.write_samples(tmp_path_factory.mktemp("held"), samples.held_samples())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---- released as opaque data --------------------------------------------------------------------
@pytest.mark.parametrize("name", OPAQUE_NAMES)
def test_scan_file_opaque_sample_is_clean_with_one_info_finding(
    name: str, opaque_files: dict[str, Path]
) -> None:
    report = scan_file(opaque_files[name], name=name)
    found = [(f.code, f.severity, f.outcome) for f in report.findings]
    assert (report.file_format, report.outcome, found) == (
        FileFormat.OPAQUE.value,
        Outcome.CLEAN,
        [("DATA_OPAQUE", Severity.INFO, Outcome.CLEAN)],
    )


def test_scan_file_opaque_finding_says_no_loader_would_open_it(
    opaque_files: dict[str, Path],
) -> None:
    (finding,) = scan_file(opaque_files["random_4096.bin"]).findings
    assert (finding.scanner, finding.message) == ("opaque", MESSAGE)


@pytest.mark.parametrize("name", [n for n in OPAQUE_NAMES if "_starts_0x" in n])
def test_opaque_sample_starting_with_an_opcode_reaches_the_pickle_walk(
    name: str, opaque_files: dict[str, Path]
) -> None:
    data = opaque_files[name].read_bytes()
    assert (data[0] in OPCODE_BYTES, detect_format(data[:65536], len(data), name)) == (
        True,
        FileFormat.UNKNOWN,
    )


@pytest.mark.parametrize("size", [1, 17, 511, 512, 4104, 100_000])
def test_scan_file_random_bytes_of_any_size_are_opaque(tmp_path: Path, size: int) -> None:
    path = _write(tmp_path / "shard.bin", samples.random_bytes(11, size, first=0x01))
    assert scan_file(path).file_format == FileFormat.OPAQUE.value


def test_scan_file_tf_checkpoint_index_sstable_is_opaque(opaque_files: dict[str, Path]) -> None:
    data = opaque_files["model.ckpt.index"].read_bytes()
    report = scan_file(opaque_files["model.ckpt.index"])
    assert (data[-8:], report.file_format, report.outcome) == (
        samples.TABLE_MAGIC.to_bytes(8, "little"),
        FileFormat.OPAQUE.value,
        Outcome.CLEAN,
    )


def test_scan_file_protocol_above_5_then_noise_is_opaque(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.bin", b"\x80\x07" + samples.random_bytes(12, 5000)[2:])
    assert scan_file(path).file_format == FileFormat.OPAQUE.value


# ---- held: what a loader opens, where it looks ---------------------------------------------------
@pytest.mark.parametrize("name", HELD_NAMES)
def test_scan_file_held_sample_is_not_opaque(name: str, held_files: dict[str, Path]) -> None:
    report = scan_file(held_files[name], name=name)
    codes = {f.code for f in report.findings}
    assert (report.outcome in HELD, report.file_format, "DATA_OPAQUE" in codes) == (
        True,
        report.file_format if report.file_format != FileFormat.OPAQUE.value else "not opaque",
        False,
    ), [f.to_dict() for f in report.findings]


def test_scan_file_pickle_named_pytorch_model_bin_is_malicious(tmp_path: Path) -> None:
    path = _write(tmp_path / "pytorch_model.bin", EVIL)
    assert scan_file(path).outcome in BAD


def test_scan_file_evil_torch_zip_named_pytorch_model_bin_is_malicious(tmp_path: Path) -> None:
    path = _write(tmp_path / "pytorch_model.bin", torch_zip_with(EVIL))
    assert scan_file(path).outcome in BAD


def test_scan_file_torch_zip_named_pytorch_model_bin_is_scanned_as_torch(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(64)}, path)
    report = scan_file(path)
    assert (report.file_format, report.outcome) == (FileFormat.TORCH_ZIP.value, Outcome.CLEAN)


def test_scan_file_random_bytes_with_zip_eocd_appended_is_held(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.bin", samples.with_zip_eocd(samples.random_bytes(13, 200_000)))
    report = scan_file(path)
    assert (report.outcome, report.findings[0].code, report.findings[0].details["structure"]) == (
        Outcome.REVIEW,
        "FORMAT_UNKNOWN",
        "zip",
    )


def test_scan_file_random_bytes_with_evil_zip_appended_is_malicious(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.bin", samples.random_bytes(14, 90_000) + torch_zip_with(EVIL))
    assert scan_file(path).outcome == Outcome.MALICIOUS


@pytest.mark.parametrize(
    "build", [samples.pickle_after_short_string, samples.pickle_after_long_bytes]
)
def test_scan_file_random_bytes_with_pickle_at_polyglot_offset_is_malicious(
    tmp_path: Path, build: Callable[[bytes], bytes]
) -> None:
    path = _write(tmp_path / "x.bin", build(samples.random_bytes(15, 300_000)))
    assert scan_file(path).outcome == Outcome.MALICIOUS


def test_scan_file_random_bytes_starting_with_global_os_system_is_malicious(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path / "x.bin", samples.global_then_random(samples.random_bytes(16, 9000)))
    report = scan_file(path)
    assert (report.outcome, "PICKLE_GLOBAL_DENIED" in {f.code for f in report.findings}) == (
        Outcome.MALICIOUS,
        True,
    )


def test_scan_file_pickle_of_protocol_above_5_is_held(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.bin", b"\x80\x07" + reduce_global("os", "system"))
    report = scan_file(path)
    assert (report.outcome, report.file_format) == (Outcome.REVIEW, FileFormat.UNKNOWN.value)


@pytest.mark.parametrize("offset", [4096, 131_072])
def test_scan_file_hdf5_signature_at_late_user_block_offset_is_held(
    tmp_path: Path, offset: int
) -> None:
    data = samples.with_hdf5_signature(samples.random_bytes(17, 300_000), offset)
    report = scan_file(_write(tmp_path / "x.bin", data))
    assert (report.outcome, report.findings[0].details["offset"]) == (Outcome.REVIEW, offset)


def test_scan_file_real_hdf5_with_8192_byte_user_block_is_held(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    with h5py.File(path, "w", userblock_size=8192) as h5:
        h5.create_dataset("kernel", data=np.ones((4, 4), dtype=np.float32))
    data = bytearray(path.read_bytes())
    data[:8192] = samples.random_bytes(18, 8192)
    path.write_bytes(data)
    assert (h5py.is_hdf5(path), scan_file(path).outcome) == (True, Outcome.REVIEW)


def test_scan_file_tar_header_without_ustar_magic_is_held(tmp_path: Path) -> None:
    data = samples.v7_tar(samples.random_bytes(19, 20_000))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
    report = scan_file(_write(tmp_path / "x.bin", data))
    assert (names, report.outcome, report.file_format) == (
        ["x"],
        Outcome.REVIEW,
        FileFormat.UNKNOWN.value,
    )


def test_scan_file_lzma_stream_joblib_would_decompress_is_held(tmp_path: Path) -> None:
    data = samples.joblib_lzma(EVIL)
    assert lzma.decompress(data, format=lzma.FORMAT_ALONE) == EVIL  # decompressed, never loaded
    assert scan_file(_write(tmp_path / "model.joblib", data)).outcome == Outcome.REVIEW


@pytest.mark.parametrize("magic", [b"ZF0000000000000000040", b"BZ\x00"])
def test_scan_file_joblib_compressor_prefix_is_held(tmp_path: Path, magic: bytes) -> None:
    data = magic + samples.random_bytes(20, 5000)
    assert scan_file(_write(tmp_path / "model.joblib", data)).outcome in HELD


def test_scan_file_protobuf_beyond_detection_prefix_is_held(tmp_path: Path) -> None:
    data = samples.protobuf_beyond_prefix()
    assert detect_format(data[:65536], len(data), "graph.bin") == FileFormat.UNKNOWN
    report = scan_file(_write(tmp_path / "graph.bin", data))
    assert (report.outcome, report.findings[0].details["structure"]) == (
        Outcome.REVIEW,
        "protobuf",
    )


def test_scan_file_saved_model_beyond_detection_prefix_is_walked_as_a_graph(
    tmp_path: Path,
) -> None:
    data = samples.saved_model_pb()
    assert detect_format(data[:65536], len(data), "saved_model.pb") == FileFormat.UNKNOWN
    report = scan_file(_write(tmp_path / "variables.bin", data))
    assert (report.file_format, report.outcome) == ("tensorflow", Outcome.CLEAN)


@pytest.mark.parametrize(
    "magic",
    [b"\x7fELF\x02\x01\x01", b"MZ\x90\x00", b"\xcf\xfa\xed\xfe", b"\x00asm", b"\xa7\x0d\r\n"],
)
def test_scan_file_executable_or_bytecode_is_held(tmp_path: Path, magic: bytes) -> None:
    data = magic + samples.random_bytes(21, 5000)[len(magic) :]
    report = scan_file(_write(tmp_path / "ops.so", data))
    assert (report.outcome, report.findings[0].details["structure"]) == (
        Outcome.REVIEW,
        "executable",
    )


# ---- the checks themselves ----------------------------------------------------------------------
def test_tar_checksum_holds_real_header_is_true() -> None:
    header = tarfile.TarInfo("model.bin").tobuf(format=tarfile.USTAR_FORMAT)
    assert tar_checksum_holds(header[:512])


@pytest.mark.parametrize("block", [b"\0" * 512, samples.random_bytes(22, 512), b"\0" * 100])
def test_tar_checksum_holds_zeros_noise_or_short_block_is_false(block: bytes) -> None:
    assert not tar_checksum_holds(block)


def test_hdf5_offsets_are_zero_then_512_doubling() -> None:
    assert hdf5_offsets(5000) == [0, 512, 1024, 2048, 4096]


@pytest.mark.parametrize(
    ("data", "available", "expected"),
    [
        (pb_field(1, 8) + pb_field(2, "x"), None, Protobuf.PROTOBUF),
        (b"\x1b" + pb_field(1, 1) + b"\x1c", None, Protobuf.PROTOBUF),  # a closed group
        (b"\x1b" + pb_field(1, 1), None, Protobuf.NOT_PROTOBUF),  # a group never closed
        (pb_field(1, 8) + b"\x07", None, Protobuf.NOT_PROTOBUF),  # wire type 7
        (b"\x00\x01", None, Protobuf.NOT_PROTOBUF),  # field number 0
        (pb_field(1, 8) + pb_field(2, b"y" * 100) + pb_field(3, 1), 10, Protobuf.NEEDS_MORE),
    ],
)
def test_protobuf_parse_whole_file_decides(
    data: bytes, available: int | None, expected: Protobuf
) -> None:
    given = len(data) if available is None else available
    assert protobuf_parse(data, given, len(data)) == expected


def test_protobuf_parse_random_bytes_are_not_protobuf() -> None:
    data = samples.random_bytes(23, 100_000)
    assert protobuf_parse(data, len(data), len(data)) == Protobuf.NOT_PROTOBUF


def test_cli_opaque_file_exits_0_with_format_opaque(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "openvino_model.bin", samples.openvino_weights())
    code = main(["--json", str(path)])
    report = json.loads(capsys.readouterr().out)["reports"][0]
    assert (code, report["format"], [f["code"] for f in report["findings"]]) == (
        0,
        "opaque",
        ["DATA_OPAQUE"],
    )
