"""The risk card's file-format safety dimension (`proxy.trust.risk`): which files a loader would
unpickle (by the scanners' format once fetched, by the file name before), remote code, the worst
finding, held files, and the Hub's own scan where it flags a file this mirror released. Pure."""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.trust.risk_facts import (
    NOT_FETCHED,
    Dimension,
    DimensionName,
    Rating,
    RepoFile,
    RiskFacts,
)
from scanners.report import JsonValue, Severity

MAX_FACT_ITEMS = 20  # paths listed in one fact
# Scanner formats a loader unpickles (torch.load, joblib.load, numpy with allow_pickle...).
PICKLE_FORMATS = frozenset(
    {"pickle", "pytorch-zip", "pytorch-legacy", "pytorch-tar", "joblib", "torchscript", "nemo"}
)
ARRAY_FORMATS = frozenset({"numpy", "npz"})  # pickle-bearing only when holding object arrays
SAFE_FORMATS = frozenset({"safetensors", "gguf"})
OTHER_MODEL_FORMATS = frozenset({"onnx", "keras", "hdf5", "msgpack", "tensorflow", "skops"})
# Before a file is fetched, its name is all there is.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".nemo", ".mar")
SAFE_SUFFIXES = (".safetensors", ".gguf")
OTHER_MODEL_SUFFIXES = (".onnx", ".h5", ".keras", ".msgpack", ".tflite", ".pb", ".npy", ".npz")


class FormatKind(enum.StrEnum):
    PICKLE = "pickle-bearing"
    SAFE = "safetensors/GGUF"
    OTHER = "other model format"
    NOT_MODEL = "not a model file"


def format_kind(file: RepoFile) -> FormatKind:
    """What kind of model file it is: by the scanners' format once fetched, by its name before."""
    fmt = file.file_format
    if fmt:
        if fmt in PICKLE_FORMATS:
            return FormatKind.PICKLE
        if fmt in ARRAY_FORMATS:
            pickled = any(c.startswith("PICKLE") for c in file.codes)
            return FormatKind.PICKLE if pickled else FormatKind.OTHER
        if fmt in SAFE_FORMATS:
            return FormatKind.SAFE
        if fmt in OTHER_MODEL_FORMATS:
            return FormatKind.OTHER
        return FormatKind.NOT_MODEL
    name = file.path.lower()
    if name.endswith(PICKLE_SUFFIXES):
        return FormatKind.PICKLE
    if name.endswith(SAFE_SUFFIXES):
        return FormatKind.SAFE
    if name.endswith(OTHER_MODEL_SUFFIXES):
        return FormatKind.OTHER
    return FormatKind.NOT_MODEL


def _share(part: int, whole: int) -> float:
    return round(part / whole, 3) if whole else 0.0


def _paths(files: Sequence[RepoFile]) -> list[JsonValue]:
    return [f.path for f in files[:MAX_FACT_ITEMS]]


def _remote_code(facts: RiskFacts) -> list[str]:
    python = [
        f.path for f in facts.files if fnmatch.fnmatchcase(posixpath.basename(f.path), "*.py")
    ]
    coded = [f.path for f in facts.files if any(c.startswith("REMOTE_CODE_") for c in f.codes)]
    found = (["auto_map in config.json"] if facts.auto_map else []) + python
    return found + [p for p in coded if p not in python]


@dataclass(frozen=True, slots=True)
class _Formats:
    """The revision's files sorted by what a loader does with them."""

    models: list[RepoFile]
    pickled: list[RepoFile]
    safe: list[RepoFile]
    remote: list[str]
    held: list[RepoFile]
    held_by_risk: list[RepoFile]  # held by max_risk itself: not counted as held here
    unscanned: list[RepoFile]
    top: RepoFile | None  # the file with the worst finding
    hub_flags: list[RepoFile]

    @property
    def pickled_bytes_share(self) -> float:
        return _share(sum(f.size for f in self.pickled), sum(f.size for f in self.models))

    def worst_at_least(self, severity: Severity) -> bool:
        return bool(self.top and self.top.worst and self.top.worst.rank >= severity.rank)


def _formats(facts: RiskFacts) -> _Formats:
    kinds = {f.path: format_kind(f) for f in facts.files}
    models = [f for f in facts.files if kinds[f.path] is not FormatKind.NOT_MODEL]
    scored = [f for f in facts.files if f.worst is not None]
    return _Formats(
        models=models,
        pickled=[f for f in models if kinds[f.path] is FormatKind.PICKLE],
        safe=[f for f in models if kinds[f.path] is FormatKind.SAFE],
        remote=_remote_code(facts),
        held=[
            f for f in facts.files if f.state in ("quarantined", "rejected") and not f.held_by_risk
        ],
        held_by_risk=[f for f in facts.files if f.state == "quarantined" and f.held_by_risk],
        unscanned=[f for f in models if f.state == NOT_FETCHED],
        top=max(scored, key=lambda f: f.worst.rank if f.worst else -1, default=None),
        hub_flags=[f for f in facts.files if f.hub is not None and f.hub.verdict.flags],
    )


def _format_facts(found: _Formats, facts: RiskFacts) -> dict[str, JsonValue]:
    top = found.top
    worst_finding: JsonValue = None
    if top is not None and top.worst is not None:
        worst_finding = {"path": top.path, "severity": top.worst.value, "finding": top.worst_text}
    return {
        "model_files": len(found.models),
        "pickle_bearing_files": _paths(found.pickled),
        "safe_format_files": _paths(found.safe),
        "pickle_bearing_share_of_files": _share(len(found.pickled), len(found.models)),
        "pickle_bearing_share_of_bytes": found.pickled_bytes_share,
        "remote_code": list(found.remote[:MAX_FACT_ITEMS]),
        "worst_finding": worst_finding,
        "held_files": _paths(found.held),
        "held_by_max_risk": _paths(found.held_by_risk),
        "not_scanned_yet": _paths(found.unscanned),
        "hub_flags": [
            f"{f.path}: {f.hub.verdict.value}" for f in found.hub_flags[:MAX_FACT_ITEMS] if f.hub
        ],
        "hub_scans_done": facts.hub_scans_done,
        "file_list": "complete" if facts.complete_tree else "partial",
    }


def _format_high(found: _Formats) -> list[str]:
    reasons = []
    if found.remote:
        reasons.append("remote code: " + ", ".join(found.remote[:3]))
    if found.held:
        reasons.append(f"{len(found.held)} file(s) held")
    if found.top and found.top.worst and found.worst_at_least(Severity.HIGH):
        reasons.append(f"{found.top.worst.value} finding in {found.top.path}")
    if found.pickled and found.pickled_bytes_share >= 0.5:
        reasons.append("most model bytes are pickle-bearing")
    return reasons


def _format_medium(found: _Formats) -> list[str]:
    reasons = []
    if found.pickled:
        reasons.append(f"{len(found.pickled)} pickle-bearing file(s) beside safe formats")
    if found.top and found.worst_at_least(Severity.MEDIUM):
        reasons.append(f"medium finding in {found.top.path}")
    released = [f for f in found.hub_flags if f.state == "released"]
    if released:
        reasons.append(f"the Hub flags {released[0].path}, which this mirror released")
    return reasons


def format_dimension(facts: RiskFacts) -> Dimension:
    """The dimension as shown, with its `settled` rating when model files are not scanned yet:
    each will be judged by its own scan when fetched, and until then only its name speaks for
    it, so the settled rating is the lower of the rating their names give (without "not scanned
    yet") and the rating of the other files alone. Either reading alone would hold files for a
    guess: an OpenVINO `.bin` is not a pickle, and leaving out an unscanned safetensors file
    makes a small pickle beside it look like most of the bytes."""
    dimension = _format_dimension(facts)
    unscanned = {
        f.path
        for f in facts.files
        if f.state == NOT_FETCHED and format_kind(f) is not FormatKind.NOT_MODEL
    }
    if not unscanned:
        return dimension
    by_name = _format_dimension(facts, count_unscanned=False).rating
    known = [f for f in facts.files if f.path not in unscanned]
    without = _format_dimension(dataclasses.replace(facts, files=known)).rating
    settled = by_name if by_name.rank <= without.rank else without
    return dataclasses.replace(dimension, settled=settled)


def _format_dimension(facts: RiskFacts, *, count_unscanned: bool = True) -> Dimension:
    found = _formats(facts)
    out = _format_facts(found, facts)
    high = _format_high(found)
    if high:
        return Dimension(DimensionName.FORMAT, Rating.HIGH, "; ".join(high), out)
    medium = _format_medium(found)
    if found.unscanned and count_unscanned:
        medium.append(f"{len(found.unscanned)} model file(s) not scanned yet")
    if medium:
        return Dimension(DimensionName.FORMAT, Rating.MEDIUM, "; ".join(medium), out)
    summary = (
        "model files in safetensors/GGUF only" if found.safe else "no pickle-bearing model file"
    )
    return Dimension(DimensionName.FORMAT, Rating.LOW, summary + ", no remote code", out)
