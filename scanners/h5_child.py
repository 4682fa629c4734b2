"""The child process that reads a Keras `.h5` model_config with h5py, under resource limits
(`scanners.keras._h5_config` says why). It sends one (kind, value) reply; none means a limit hit."""

from __future__ import annotations

import contextlib
import io
import resource
from multiprocessing.connection import Connection

from scanners.limits import KerasLimits


def read_model_config(data: bytes, limits: KerasLimits, send: Connection) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (limits.h5_cpu_s, limits.h5_cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (limits.h5_memory_bytes, limits.h5_memory_bytes))
    with contextlib.suppress(MemoryError):  # no reply: the parent reports the limit
        send.send(_read(data, limits))


def _read(data: bytes, limits: KerasLimits) -> tuple[str, object]:
    try:
        import h5py  # optional: HDF5 is parsed by the C library h5py wraps
    except ImportError:
        return ("missing", None)
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            if "model_config" not in h5.attrs:
                return ("none", None)  # weights only (save_weights, transformers' tf_model.h5)
            stored = h5.attrs.get_id("model_config").get_storage_size()
            if stored > limits.max_config_bytes:
                return ("invalid", f"model_config is {stored} bytes")
            raw = h5.attrs["model_config"]
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        return ("invalid", f"unreadable HDF5 ({str(exc)[:80]})")
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, bytes):
        return ("invalid", f"model_config is a {type(raw).__name__}, not JSON text")
    return ("json", raw)
