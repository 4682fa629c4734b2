"""PyTorch formats: zip checkpoints, legacy stream, legacy tar, TorchScript."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import torch

from scanners import Outcome, scan_file
from tests.scanners.corpus import EVIL, legacy_torch_with, torch_zip_with, torchscript_bytes


def _codes(path: Path) -> set[str]:
    return {f.code for f in scan_file(path).findings}


def test_torch_zip_state_dict_is_clean_and_named(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    torch.save({"w": torch.ones(3)}, path)
    report = scan_file(path)
    assert (report.file_format, report.outcome) == ("pytorch-zip", Outcome.CLEAN)


def test_torch_legacy_state_dict_is_clean_and_named(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    report = scan_file(path)
    assert (report.file_format, report.outcome) == ("pytorch-legacy", Outcome.CLEAN)


def test_torch_legacy_payload_in_main_pickle_is_malicious(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(legacy_torch_with(EVIL))
    assert scan_file(path).outcome == Outcome.MALICIOUS


def test_torch_legacy_storage_bytes_after_pickles_are_not_walked(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(legacy_torch_with(pickle.dumps({"w": 1}, protocol=2)) + b"\xff" * 64)
    assert scan_file(path).outcome == Outcome.CLEAN


def test_torch_zip_storage_member_is_not_parsed_as_pickle(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(torch_zip_with(pickle.dumps({"w": 1}, protocol=2)))
    assert scan_file(path).outcome == Outcome.CLEAN


def test_torch_zip_payload_in_data_pkl_names_member(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(torch_zip_with(EVIL))
    (finding,) = scan_file(path).findings
    assert finding.details["member"] == "archive/data.pkl"


def test_torch_torchscript_archive_of_torch_code_is_clean_with_info(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    path.write_bytes(torchscript_bytes())
    report = scan_file(path)
    assert (report.file_format, report.outcome) == ("torchscript", Outcome.CLEAN)
    assert _codes(path) == {"TORCHSCRIPT_CODE"}


def test_torch_legacy_tar_payload_in_pickle_member_is_malicious(tmp_path: Path) -> None:
    path = tmp_path / "old.tar"
    with tarfile.open(path, "w") as archive:
        for name, data in [
            ("sys_info", pickle.dumps({"little_endian": True}, protocol=2)),
            ("pickle", EVIL),
            ("storages", pickle.dumps(0, protocol=2)),
            ("tensors", pickle.dumps(0, protocol=2)),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    report = scan_file(path)
    assert (report.file_format, report.outcome) == ("pytorch-tar", Outcome.MALICIOUS)
