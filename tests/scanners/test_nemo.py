"""NeMo `model_config.yaml` and Hydra YAML: the targets a config makes its loader import are
allow-listed in NeMo configs, denied ones are malicious everywhere, and the YAML is bounded."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from scanners import Outcome, scan_file
from scanners.limits import NemoLimits
from scanners.nemo import scan_yaml
from tests.scanners.corpus_formats import BILLION_LAUGHS_YAML, NEMO_CONFIG, nemo_config, nemo_tar

NEMO = "model_config.yaml"


def codes(source: str, name: str = NEMO, **kwargs: object) -> list[str]:
    return [f.code for f in scan_yaml(source.encode(), name, **kwargs)]  # type: ignore[arg-type]


def test_scan_yaml_nemo_asr_config_is_clean() -> None:
    assert codes(NEMO_CONFIG) == []


@pytest.mark.parametrize(
    "target",
    [
        "nemo.collections.asr.modules.ConformerEncoder",
        "nemo.core.classes.NeuralModule",
        "torch.nn.Linear",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "torch.utils.data.DataLoader",
        "lightning.pytorch.callbacks.ModelCheckpoint",
    ],
)
def test_scan_yaml_allowed_target_is_clean(target: str) -> None:
    assert codes(nemo_config(encoder_target=target)) == []


@pytest.mark.parametrize(
    "target",
    ["os.system", "builtins.eval", "subprocess.Popen", "torch.load", "hydra.utils.get_method",
     "functools.partial", "pickle.loads", "builtins.__import__", "numpy.load"],
)  # fmt: skip
def test_scan_yaml_denied_target_is_malicious(target: str) -> None:
    (finding,) = scan_yaml(nemo_config(encoder_target=target).encode(), NEMO)
    assert (finding.code, finding.outcome) == ("HYDRA_TARGET_DENIED", Outcome.MALICIOUS)


@pytest.mark.parametrize(
    "target",
    [
        "evil_pkg.Encoder",
        "nemo.collections.asr.models.EncDecCTCModel.restore_from",
        "nemo.utils.model_utils.import_class_by_path",
        "torch.nn.functional.relu",
        "transformers_like.AutoThing",
    ],
)
def test_scan_yaml_target_outside_the_allow_list_needs_review(target: str) -> None:
    assert codes(nemo_config(encoder_target=target)) == ["HYDRA_TARGET_UNKNOWN"]


def test_scan_yaml_nemo_top_level_target_is_checked() -> None:
    assert codes(nemo_config(top="target: os.system")) == ["HYDRA_TARGET_DENIED"]


def test_scan_yaml_other_yaml_reports_only_denied_targets() -> None:
    source = "a:\n  _target_: my_project.Model\nb:\n  _target_: os.system\n"
    assert codes(source, "conf/config.yaml") == ["HYDRA_TARGET_DENIED"]


def test_scan_yaml_other_yaml_top_level_target_key_is_plain_data() -> None:
    assert codes("target: my_label\n", "conf/config.yaml") == []


def test_scan_yaml_trust_remote_code_in_nemo_config_needs_review() -> None:
    source = nemo_config(extra="ds:\n  hf_data_cfg:\n    trust_remote_code: true\n")
    (finding,) = scan_yaml(source.encode(), NEMO)
    assert (finding.code, finding.details["paths"]) == (
        "NEMO_TRUST_REMOTE_CODE",
        ["ds.hf_data_cfg.trust_remote_code"],
    )


@pytest.mark.parametrize(
    "tag",
    ["!!python/object/apply:os.system ['id']", "!!python/name:os.system", "!python/module:os"],
)
def test_scan_yaml_python_tag_is_malicious_in_any_yaml(tag: str) -> None:
    assert codes(f"x: {tag}\n", "params.yml") == ["YAML_PYTHON_TAG"]


def test_scan_yaml_billion_laughs_is_a_resource_finding() -> None:
    assert codes(nemo_config(extra=BILLION_LAUGHS_YAML)) == ["NEMO_CONFIG_RESOURCE"]


def test_scan_yaml_recursive_alias_is_a_resource_finding() -> None:
    assert codes("a: &a [1, *a]\n") == ["NEMO_CONFIG_RESOURCE"]


def test_scan_yaml_deep_flow_nesting_is_refused_before_parsing() -> None:
    assert codes("a: " + "[" * 100_000 + "]" * 100_000 + "\n") == ["NEMO_CONFIG_RESOURCE"]


def test_scan_yaml_oversized_config_is_refused() -> None:
    limits = NemoLimits(max_config_bytes=100)
    assert codes(NEMO_CONFIG, limits=limits) == ["NEMO_CONFIG_RESOURCE"]


def test_scan_yaml_malformed_nemo_config_is_an_error() -> None:
    assert codes("a: [unclosed\n  b: {") == ["NEMO_CONFIG_MALFORMED"]


def test_scan_yaml_malformed_other_yaml_is_no_finding() -> None:
    assert codes("a: [unclosed\n", "notes.yaml") == []


def test_scan_file_nemo_archive_is_nemo_format_and_clean(tmp_path: Path) -> None:
    path = tmp_path / "model.nemo"
    path.write_bytes(nemo_tar(NEMO_CONFIG))
    report = scan_file(path)
    assert (report.file_format, report.outcome) == ("nemo", Outcome.CLEAN)


def test_scan_file_nemo_archive_names_the_config_member(tmp_path: Path) -> None:
    path = tmp_path / "model.nemo"
    path.write_bytes(nemo_tar(nemo_config(encoder_target="os.system")))
    (finding,) = scan_file(path).findings
    assert finding.details["member"] == "./model_config.yaml"


def test_scan_file_nemo_weights_member_is_scanned_as_torch(tmp_path: Path) -> None:
    from tests.scanners.corpus import EVIL, torch_zip_with

    path = tmp_path / "model.nemo"
    path.write_bytes(nemo_tar(NEMO_CONFIG, weights=torch_zip_with(EVIL)))
    report = scan_file(path)
    assert report.outcome == Outcome.MALICIOUS
    assert {f.details["member"] for f in report.findings} == {
        "./model_weights.ckpt/archive/data.pkl"
    }


def test_nemo_tar_sample_is_a_real_tar() -> None:
    with tarfile.open(fileobj=io.BytesIO(nemo_tar(NEMO_CONFIG))) as archive:
        names = archive.getnames()
    assert names == ["./model_config.yaml", "./model_weights.ckpt", "./tokenizer.vocab"]
