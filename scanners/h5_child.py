"""The child process that reads a Keras `.h5` model_config with h5py, under resource limits
(`scanners.keras._h5_config` says why). It sends one (kind, value) reply; none means a limit hit."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import resource
import signal
from multiprocessing.connection import Connection
from pathlib import Path

from scanners.limits import KerasLimits

# A fork keeps its parent's handlers for these (a fuzzer's crash reporter, faulthandler): the
# reader must die of them plainly, as a fresh process would, and let its parent report that.
_FATAL_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE)


def read_model_config(data: bytes, limits: KerasLimits, send: Connection) -> None:
    faulthandler.disable()
    for number in _FATAL_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_CPU, (limits.h5_cpu_s, limits.h5_cpu_s))
    address_space = _address_space_limit(limits.h5_memory_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    with contextlib.suppress(MemoryError):  # no reply: the parent reports the limit
        send.send(_read(data, limits))


def _address_space_limit(budget: int) -> int:
    """What the reader has mapped already (a fork shares its parent's pages) plus `budget`,
    never above a limit this process was given (it may not raise it)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        mapped = pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):  # not Linux: a fresh interpreter, small
        mapped = 0
    wanted = mapped + budget
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


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
