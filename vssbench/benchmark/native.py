"""C kernels for the metric accumulators on a CPU (``accumulate.c``), compiled once per machine.

Why: on a CPU the accumulators' torch code spends most of a 480x853 frame in one
``bincount``, which increments its counters one pixel after another and waits on each store
when neighbouring pixels hit the same counter, as they mostly do. ``accumulate.c`` counts
into four interleaved sub-histograms and updates mVC's pixel ages and window counts in one
pass: 0.38-0.51 against 0.73-0.81 ms per 480x853 frame for the torch code on a 2-core CPU
(``tests/benchmarks/test_harness_overhead.py``).

The source is compiled with the system C compiler (``$CC``, else ``cc``) into
``$VSSBENCH_CACHE/native/`` (default ``~/.cache/vssbench/native/``), keyed by the source's
hash, and loaded with ctypes; no Python headers are needed. Without a working compiler, or
with ``VSSBENCH_NATIVE=0``, the accumulators keep their torch code, which counts the same:
the kernels change the speed, never a number.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import warnings
from pathlib import Path

from vssbench.datasets.synthetic import default_cache_dir

SOURCE = Path(__file__).with_name("accumulate.c")
# Portable optimisation only: the compiled file may be shared by machines of one architecture.
COMPILE_FLAGS = ("-std=c99", "-O3", "-fPIC", "-shared")

_POINTER, _INT64 = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "vss_confusion_lanes": ([], ctypes.c_int),
    "vss_confusion_update": ([_POINTER, _POINTER, _INT64, _INT64, _POINTER, _POINTER], ctypes.c_int),
    "vss_consistency_update": ([_POINTER] * 6 + [_INT64, ctypes.c_uint8, _POINTER, _INT64, _POINTER], None),
}


def enabled() -> bool:
    """False when ``VSSBENCH_NATIVE=0`` asks for the torch code only."""
    return os.environ.get("VSSBENCH_NATIVE", "1") != "0"


@functools.cache
def _load() -> ctypes.CDLL | None:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(COMPILE_FLAGS).encode()).hexdigest()[:16]
    library = default_cache_dir() / "native" / f"accumulate-{key}-{platform.system()}-{platform.machine()}.so"
    try:
        if not library.exists():
            _compile(library)
        kernels = ctypes.CDLL(str(library))
    except (OSError, subprocess.SubprocessError) as error:
        warnings.warn(f"the C metric kernels are unavailable ({error}); using the torch code, which counts the "
                      f"same more slowly", RuntimeWarning, stacklevel=3)
        return None
    for name, (argtypes, restype) in _SIGNATURES.items():
        function = getattr(kernels, name)
        function.argtypes, function.restype = argtypes, restype
    return kernels


def compiler() -> list[str]:
    """The C compiler command: ``$CC`` (which may carry flags), else ``cc``."""
    return shlex.split(os.environ.get("CC", "cc"))


def _compile(library: Path) -> None:
    """Compile ``SOURCE`` into ``library`` atomically: processes starting together never load a partial file."""
    library.parent.mkdir(parents=True, exist_ok=True)
    command = compiler()
    handle, temporary = tempfile.mkstemp(dir=library.parent, suffix=".so.tmp")
    os.close(handle)
    try:
        result = subprocess.run([*command, *COMPILE_FLAGS, "-o", temporary, str(SOURCE)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise OSError(f"{' '.join(command)} failed on {SOURCE}: {result.stderr.strip()[-500:]}")
        os.replace(temporary, library)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def kernels() -> ctypes.CDLL | None:
    """The loaded kernels, compiling them on first use; None when disabled or when no compiler works."""
    return _load() if enabled() else None
