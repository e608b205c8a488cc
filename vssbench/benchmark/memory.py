"""Peak memory of a piece of work: what decides batch and resolution on a real device.

On CUDA, ``torch.cuda.max_memory_allocated`` over the allocation at entry (the peak is reset at entry).
On a CPU, the process's peak resident set size over its resident size at entry: Linux keeps the peak
(``VmHWM`` in ``/proc/self/status``) and resets it when "5" is written to ``/proc/self/clear_refs``.
Where neither is available (another OS, a kernel refusing the reset) the measurement is None, never a
number that would include earlier work.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

CUDA_KIND = "cuda max_memory_allocated growth"
CPU_KIND = "cpu peak RSS growth"
_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _trim_heap() -> None:
    """Return the heap's free memory to the OS (glibc's ``malloc_trim``), so that what the work allocates
    shows as resident growth instead of reusing pages freed earlier and still counted as resident."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """``with PeakMemory(device) as peak: work()``, then ``peak.mib`` (None: not measurable here) and
    ``peak.kind`` (how it was measured)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.kind = CUDA_KIND if self.device.type == "cuda" else CPU_KIND
        self.mib: float | None = None
        self._start: int | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        _trim_heap()
        try:
            _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident size
        except OSError:
            return self
        self._start = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = round((torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20, 1)
            return
        peak = _status_kib("VmHWM")
        self.mib = None if peak is None else round(max(peak - self._start, 0) / 1024, 1)
