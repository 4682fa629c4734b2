"""Which pickle globals ML files legitimately import, and how bad the others are.

The decision is an **allow-list**: a global is harmless only if it is listed here exactly
(module and name). Everything else needs review; the deny-list below only grades how bad an
unlisted global is (a known way to run code, read or write files, reach the network, or import
anything is "malicious"). Names are compared after the same `__builtin__` -> `builtins` mapping
the unpickler applies for protocols 0-2 (`_compat_pickle`), so aliases cannot dodge either list.
"""

from __future__ import annotations

import _compat_pickle
import enum
import re
from dataclasses import dataclass


class GlobalVerdict(enum.StrEnum):
    """What one imported global means for the file."""

    ALLOWED = "allowed"
    UNKNOWN = "unknown"  # not on the allow-list: an admin decides
    DENIED = "denied"  # a known way to run code or touch the system


@dataclass(frozen=True, slots=True)
class GlobalJudgement:
    verdict: GlobalVerdict
    reason: str


_TORCH_DTYPES = frozenset(
    {
        "float16", "float32", "float64", "bfloat16", "half", "float", "double",
        "complex32", "complex64", "complex128", "cfloat", "cdouble", "chalf",
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "short", "int", "long", "bool", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
        "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
        "float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
        "strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn",
        "contiguous_format", "channels_last", "channels_last_3d", "preserve_format",
        "per_tensor_affine", "per_channel_affine", "per_tensor_symmetric",
        "per_channel_symmetric", "per_channel_affine_float_qparams",
        "Size", "device", "dtype", "layout", "memory_format", "qscheme", "Tensor",
    }
)  # fmt: skip

_TORCH_REBUILD = frozenset(
    {
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state", "_rebuild_sparse_tensor", "_rebuild_nested_tensor",
        "_rebuild_qtensor", "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor",
        "_rebuild_xla_tensor", "_rebuild_mtia_tensor", "_rebuild_sparse_csr_tensor",
    }
)  # fmt: skip

_HARMLESS_BUILTINS = frozenset(
    {
        "set", "frozenset", "slice", "complex", "range", "bytearray", "bytes", "int", "float",
        "str", "bool", "dict", "list", "tuple", "object", "NotImplemented", "Ellipsis",
    }
)  # fmt: skip

# Exact (module, name) pairs beyond the families above. Each one was checked not to run code,
# touch files or import anything when called with attacker-chosen arguments.
_ALLOWED_PAIRS = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("collections", "Counter"),
        ("collections", "deque"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("torch.storage", "UntypedStorage"),
        ("torch.storage", "TypedStorage"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch._tensor", "_rebuild_from_type"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.nn.parameter", "Buffer"),
        # TorchScript archives' own pickles (read by torch.jit's C++ unpickler)
        ("torch.jit._pickle", "build_intlist"),
        ("torch.jit._pickle", "build_doublelist"),
        ("torch.jit._pickle", "build_boollist"),
        ("torch.jit._pickle", "build_tensorlist"),
        ("torch.jit._pickle", "build_tensor_from_id"),
        ("torch.jit._pickle", "restore_type_tag"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pcg64", "PCG64DXSM"),
        ("numpy.random._philox", "Philox"),
        ("numpy.random._sfc64", "SFC64"),
        ("numpy.random.mtrand", "RandomState"),
        ("numpy.random._generator", "Generator"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("joblib.numpy_pickle", "NDArrayWrapper"),
        ("argparse", "Namespace"),
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
        ("fractions", "Fraction"),
        ("uuid", "UUID"),
        ("pathlib", "Path"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "PureWindowsPath"),
        ("copyreg", "_reconstructor"),  # its arguments are checked by the walker
        ("_codecs", "encode"),  # only as numpy uses it: checked by the walker
        ("torch.storage", "_load_from_bytes"),  # its embedded bytes are scanned as a torch file
        # Lightning and Hugging Face training files (training_args.bin, *.ckpt)
        ("pytorch_lightning.utilities.parsing", "AttributeDict"),
        ("lightning_fabric.utilities.data", "AttributeDict"),
        ("lightning.fabric.utilities.data", "AttributeDict"),
        ("transformers.training_args", "TrainingArguments"),
        ("transformers.training_args", "OptimizerNames"),
        ("transformers.training_args_seq2seq", "Seq2SeqTrainingArguments"),
        ("transformers.trainer_utils", "IntervalStrategy"),
        ("transformers.trainer_utils", "SchedulerType"),
        ("transformers.trainer_utils", "HubStrategy"),
        ("transformers.trainer_utils", "SaveStrategy"),
        ("transformers.trainer_utils", "FSDPOption"),
        ("transformers.debug_utils", "DebugOption"),
        ("accelerate.utils.dataclasses", "DistributedType"),
        ("accelerate.state", "PartialState"),
    }
)

# Module prefixes that are a known way to run code, import code, touch files or the network.
# A module matches a prefix when it equals it or starts with it plus a dot.
_DENIED_MODULES = frozenset(
    {
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "_winapi",
        "sys", "runpy", "importlib", "imp", "pkgutil", "zipimport", "pty", "tty", "socket",
        "_socket", "socketserver", "ssl", "_ssl", "select", "selectors", "shutil", "pip",
        "ensurepip", "venv", "webbrowser", "code", "codeop", "pydoc", "timeit", "cProfile",
        "profile", "_lsprof", "pstats", "pdb", "bdb", "trace", "tracemalloc", "ctypes", "_ctypes",
        "marshal", "types", "asyncio", "multiprocessing", "concurrent", "threading", "_thread",
        "signal", "atexit", "gc", "inspect", "ast", "dis", "compileall", "py_compile",
        "pickle", "_pickle", "pickletools", "copyreg", "copy_reg", "shelve", "dbm", "dill",
        "cloudpickle", "joblib", "idlelib", "lib2to3", "distutils", "setuptools", "pkg_resources",
        "doctest", "unittest", "test", "_pyrepl", "pyrepl", "_osx_support", "_aix_support",
        "imaplib", "smtplib", "poplib", "ftplib", "telnetlib", "nntplib", "http", "httplib",
        "urllib", "urllib2", "urllib3", "requests", "aiohttp", "httpx", "xmlrpc", "mailcap",
        "commands", "popen2", "platform", "sysconfig", "site", "builtins", "__builtin__",
        "io", "_io", "fileinput", "tempfile", "glob", "zipfile", "tarfile", "gzip", "bz2", "lzma",
        "logging", "mmap", "fcntl", "resource", "msvcrt", "winreg", "_winreg", "operator",
        "_operator", "functools", "_functools", "itertools", "weakref", "linecache", "tokenize",
        "jinja2", "yaml", "numexpr", "sympy", "mlflow", "pandas", "keras", "tensorflow",
        "huggingface_hub", "transformers", "accelerate", "sqlite3", "_sqlite3", "uuid", "cgi",
        "numpy.f2py", "numpy.testing", "numpy.distutils", "numpy.ctypeslib", "numpy.lib.npyio",
        "numpy.lib.format", "numpy.lib._npyio_impl", "numpy.load", "torch.hub", "torch.jit",
        "torch._C", "torch.ops", "torch._ops", "torch.classes", "torch.library", "torch.package",
        "torch.utils.cpp_extension", "torch.utils.collect_env", "torch.utils.bottleneck",
        "torch.utils.data.datapipes", "torch.utils._config_module", "torch._inductor",
        "torch._dynamo", "torch.fx", "torch.distributed", "torch.serialization", "torch.storage",
        "torch.compiler", "torch.export", "torch._export", "torch.multiprocessing",
        "torch.testing", "torch.backends", "torch.cuda.memory",
    }
)  # fmt: skip

# Dangerous names inside modules that are otherwise fine (or are graded per name).
_DENIED_NAMES = frozenset(
    {
        ("torch", "load"),
        ("torch", "save"),
        ("torch", "from_file"),
        ("torch", "compile"),
        ("torch", "_load_global_deps"),
        ("torch", "set_default_device"),
        ("numpy", "load"),
        ("numpy", "loadtxt"),
        ("numpy", "genfromtxt"),
        ("numpy", "fromfile"),
        ("numpy", "memmap"),
        ("numpy", "save"),
        ("numpy", "savez"),
        ("numpy", "savetxt"),
        ("numpy", "tofile"),
    }
)

# A *name* that is itself one of these modules reaches it by attribute (`torch.serialization.os`).
_DANGEROUS_ATTRIBUTE_NAMES = frozenset(
    {
        "os", "sys", "subprocess", "builtins", "__builtins__", "importlib", "pickle", "socket",
        "shutil", "eval", "exec", "compile", "open", "system", "popen", "spawn", "execve",
        "execv", "getattr", "setattr", "__import__", "globals", "locals", "vars", "import_module",
    }
)  # fmt: skip

_DUNDER = re.compile(r"__\w+__")
_STORAGE_NAME = re.compile(r"^[A-Za-z0-9]*Storage$")
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")


def canonical_global(module: str, name: str) -> tuple[str, str]:
    """The (module, name) the unpickler resolves for protocols 0-2 (`fix_imports`)."""
    pair = _compat_pickle.NAME_MAPPING.get((module, name))
    if pair is not None:
        return pair
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def judge_global(module: str, name: str) -> GlobalJudgement:
    """Decide one imported global: allowed, unknown (review) or denied (malicious).

    Both the name as written and its `_compat_pickle` mapping are judged; the worse one wins.
    """
    mapped_module, mapped_name = canonical_global(module, name)
    first = _judge_exact(module, name)
    if (mapped_module, mapped_name) == (module, name):
        return first
    # Protocols 0-2 import the mapped name; an unmapped Python 2 name does not import on Python 3.
    second = _judge_exact(mapped_module, mapped_name)
    if second.verdict == GlobalVerdict.ALLOWED:
        return second
    if first.verdict == GlobalVerdict.DENIED:
        return first
    return second


def _judge_exact(module: str, name: str) -> GlobalJudgement:
    if _is_allowed(module, name):
        return GlobalJudgement(GlobalVerdict.ALLOWED, "on the allow-list")
    denial = _denial_reason(module, name)
    if denial is not None:
        return GlobalJudgement(GlobalVerdict.DENIED, denial)
    return GlobalJudgement(GlobalVerdict.UNKNOWN, "not on the allow-list of ML globals")


def _is_allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED_PAIRS:
        return True
    if module == "torch":
        return name in _TORCH_DTYPES or bool(_STORAGE_NAME.match(name))
    if module == "torch.cuda":
        return bool(_STORAGE_NAME.match(name))
    if module == "torch._utils":
        return name in _TORCH_REBUILD
    if module == "builtins":
        return name in _HARMLESS_BUILTINS
    if module == "numpy.dtypes":
        return bool(re.fullmatch(r"[A-Za-z0-9]+DType", name))
    # Classes of torch.nn layers (full-model pickles): instantiating a layer runs no user code.
    if module.startswith("torch.nn.modules.") and module.count(".") == 3:
        return bool(_CLASS_NAME.match(name)) and name.isascii()
    return False


def _module_denied(module: str) -> str | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in _DENIED_MODULES:
            return prefix
    return None


def _denial_reason(module: str, name: str) -> str | None:
    if (module, name) in _DENIED_NAMES:
        return f"{module}.{name} loads or writes files"
    # `__main__` (a script's own classes) and `__torch__` (TorchScript classes) are unknown, not
    # denied: they need review, like any code the allow-list does not name.
    top = module.split(".", 1)[0]
    if _DUNDER.search(name) or (top not in ("__main__", "__torch__") and _DUNDER.search(module)):
        return "reaches a dunder attribute (sandbox escape / introspection chain)"
    components = name.split(".")
    if len(components) > 1:
        return "a dotted name walks attributes at load time"
    prefix = _module_denied(module)
    if prefix is not None:
        return f"module {prefix!r} can run code, import code, or touch files or the network"
    if any(part in _DANGEROUS_ATTRIBUTE_NAMES for part in components):
        return f"the name {name!r} reaches a dangerous module or function"
    if not module or not name or not module.replace(".", "").replace("_", "").isalnum():
        return "the module or name is not a valid Python identifier"
    return None
