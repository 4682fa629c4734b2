"""TorchScript archives made with the real `torch.jit` (it compiles from source files, so the
modules live here): benign scripted, traced, LSTM, quantized and lite-interpreter archives, and
the CVE-2025-32434 shapes: serialized code that reads a file with `torch.from_file` or writes
one with `torch.save` (`aten::save`), which `torch.jit.load` runs, and which `torch.load(...,
weights_only=True)` reached through its TorchScript fallback. Archives are saved, never loaded.
"""

from __future__ import annotations

import io
import warnings
import zipfile

import torch


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.linear(x))
        if bool(y.sum() > 1e9):
            raise ValueError("diverged")
        return torch.relu(y)


class ReadsFile(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leaked = torch.from_file("/etc/passwd", False, 64, dtype=torch.uint8)
        return x + leaked.float().sum()


class WritesFile(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, "/tmp/hubwarden-torchscript-sample")
        return x


def _saved(module: torch.jit.ScriptModule) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def scripted() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _saved(torch.jit.script(Block()))


def traced() -> bytes:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced_model = torch.jit.trace(model.eval(), torch.zeros(1, 3, 6, 6))  # type: ignore[no-untyped-call]  # torch's stub
        return _saved(traced_model)


def lstm() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _saved(torch.jit.script(torch.nn.LSTM(4, 8, batch_first=True)))


def quantized() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            torch.nn.Sequential(torch.nn.Linear(4, 4)), {torch.nn.Linear}, dtype=torch.qint8
        )
        return _saved(torch.jit.script(model))


def lite() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted_block = torch.jit.script(Block())
        return bytes(scripted_block._save_to_buffer_for_lite_interpreter())  # type: ignore[no-untyped-call]


def reads_file() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _saved(torch.jit.script(ReadsFile()))


def writes_file() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _saved(torch.jit.script(WritesFile()))


def lite_writes_file() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted_writer = torch.jit.script(WritesFile())
        return bytes(scripted_writer._save_to_buffer_for_lite_interpreter())  # type: ignore[no-untyped-call]


def _rewritten(data: bytes, edit: dict[str, bytes]) -> bytes:
    """The archive with some members replaced (what an attacker editing it by hand does)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            archive.writestr(info.filename, edit.get(info.filename, source.read(info)))
    return out.getvalue()


def with_code_edit(old: str, new: str) -> bytes:
    """The scripted Block archive with `old` replaced by `new` in its linear layer's code."""
    data = scripted()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    member = next(n for n in names if n.endswith("modules/linear.py"))
    code = zipfile.ZipFile(io.BytesIO(data)).read(member).decode()
    if old not in code:
        raise AssertionError(f"{old!r} not in the serialized code: {code}")
    return _rewritten(data, {member: code.replace(old, new).encode()})


def with_data_pkl(payload: bytes) -> bytes:
    data = scripted()
    member = next(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.endswith("data.pkl"))
    return _rewritten(data, {member: payload})
