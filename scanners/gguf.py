"""GGUF (versions 1-3): the header's metadata checks, once `scanners.gguf_header` parsed it.

Tensor infos are held to what ggml's loader demands: known types, rows a multiple of the block
size, at most 4 dimensions, no int64 overflow (checked while parsing), offsets aligned and
contiguous, inside the file, no overlap (checked here). Chat templates
(`tokenizer.chat_template` and `tokenizer.chat_template.<name>`) go to `scanners.templates`
(CVE-2024-34359: llama-cpp-python rendered them unsandboxed). The parser's public names
(`parse_header`, `header_size`, `HeaderProbe`...) stay importable from here.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import BinaryIO

from scanners.gguf_header import DEFAULT_LIMITS as DEFAULT_LIMITS
from scanners.gguf_header import SCANNER as SCANNER
from scanners.gguf_header import GGUFHeader as GGUFHeader
from scanners.gguf_header import GGUFMalformed as GGUFMalformed
from scanners.gguf_header import GGUFTensor as GGUFTensor
from scanners.gguf_header import HeaderProbe as HeaderProbe
from scanners.gguf_header import cut, finding
from scanners.gguf_header import header_size as header_size
from scanners.gguf_header import parse_header as parse_header
from scanners.gguf_types import GGML_TYPES as GGML_TYPES
from scanners.gguf_types import TEMPLATE_KEY
from scanners.limits import GGUFLimits as GGUFLimits
from scanners.limits import TemplateLimits
from scanners.report import Finding, Outcome
from scanners.templates import DEFAULT_LIMITS as TEMPLATE_LIMITS
from scanners.templates import scan_template


def scan(
    fh: BinaryIO,
    size: int,
    name: str,
    limits: GGUFLimits = DEFAULT_LIMITS,
    templates: TemplateLimits = TEMPLATE_LIMITS,
) -> list[Finding]:
    """Check a GGUF header and its chat templates; `[]` when clean. Never raises on bad input."""
    try:
        header = parse_header(fh, size, limits)
    except GGUFMalformed as refused:
        return [refused.finding]
    findings = _check_tensor_layout(header, size)
    findings.extend(_check_templates(header, name, templates))
    return findings


def _check_tensor_layout(header: GGUFHeader, size: int) -> list[Finding]:
    data_bytes = size - header.data_offset
    for tensor in header.tensors:
        if tensor.offset % header.alignment:
            return [
                finding(
                    "GGUF_TENSOR_MISALIGNED",
                    Outcome.ERROR,
                    f"tensor {cut(tensor.name)!r} offset {tensor.offset} is not a multiple of "
                    f"the alignment {header.alignment}",
                    tensor=cut(tensor.name),
                )
            ]
        if tensor.offset + tensor.n_bytes > data_bytes:
            return [
                finding(
                    "GGUF_TENSOR_OUT_OF_FILE",
                    Outcome.ERROR,
                    f"tensor {cut(tensor.name)!r} spans {tensor.offset}.."
                    f"{tensor.offset + tensor.n_bytes} of the data area, which holds "
                    f"{data_bytes} bytes",
                    tensor=cut(tensor.name),
                )
            ]
    overlap = _first_overlap(header.tensors)
    if overlap is not None:
        return [overlap]
    return _check_contiguity(header)


def _first_overlap(tensors: list[GGUFTensor]) -> Finding | None:
    ordered = sorted((t for t in tensors if t.n_bytes), key=lambda t: t.offset)
    for before, after in itertools.pairwise(ordered):
        if after.offset < before.offset + before.n_bytes:
            return finding(
                "GGUF_TENSOR_OVERLAP",
                Outcome.MALICIOUS,
                f"tensors {cut(before.name)!r} and {cut(after.name)!r} share bytes: "
                "overlapping tensors are an aliasing and denial-of-service trick",
                tensors=[cut(before.name), cut(after.name)],
            )
    return None


def _check_contiguity(header: GGUFHeader) -> list[Finding]:
    """ggml's loader wants each offset where the previous padded tensor ends."""
    expected = 0
    for tensor in header.tensors:
        if tensor.offset != expected:
            return [
                finding(
                    "GGUF_TENSOR_OFFSET_UNEXPECTED",
                    Outcome.ERROR,
                    f"tensor {cut(tensor.name)!r} is at offset {tensor.offset}; ggml expects "
                    f"{expected} (tensors out of order or with gaps do not load)",
                    tensor=cut(tensor.name),
                    offset=tensor.offset,
                    expected=expected,
                )
            ]
        expected += tensor.n_bytes + (-tensor.n_bytes % header.alignment)
    return []


def _check_templates(header: GGUFHeader, name: str, limits: TemplateLimits) -> list[Finding]:
    findings: list[Finding] = []
    for key, gguf_field in header.fields.items():
        if not (key == TEMPLATE_KEY or key.startswith(TEMPLATE_KEY + ".")):
            continue
        if not isinstance(gguf_field.value, str):
            findings.append(
                finding(
                    "GGUF_TEMPLATE_NOT_STRING",
                    Outcome.REVIEW,
                    f"{cut(key)!r} is a {gguf_field.value_type}, not a string",
                    key=cut(key),
                )
            )
            continue
        findings.extend(
            dataclasses.replace(
                found,
                scanner=SCANNER,
                code="GGUF_" + found.code,
                details={**found.details, "key": cut(key)},
            )
            for found in scan_template(gguf_field.value, f"{name}: {key}", limits)
        )
    return findings
