"""Progress a person can follow: a tqdm bar on a terminal, a line every few seconds in a log.

A bar alone prints nothing when the output is a file (a batch job's log, CI), so where stderr is
not a terminal :class:`Progress` logs one line every ``every`` seconds instead, with the count, the
rate, the time left and the fields given (losses, the learning rate): ``training dff:tiny: 120/600
it (20%), 3.1 it/s, 2m35s left; loss 0.412``. ``enabled=False`` turns both off for one task, and
:func:`set_quiet` (``bench --quiet``) for every task of the process.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

log = logging.getLogger("vssbench")
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn every bar and progress line of this process off (``bench --quiet``) or back on."""
    global _quiet
    _quiet = quiet


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts ``total`` steps of a named task and reports them (module docstring)."""

    def __init__(self, total: int, description: str, unit: str = "it", every: float = 10.0, enabled: bool = True,
                 initial: int = 0) -> None:
        self.total, self.description, self.unit, self.every = total, description, unit, every
        self.enabled = enabled and not _quiet
        self.done = initial
        self._start, self._start_done = time.perf_counter(), initial
        self._last_line = self._start
        self._bar = (tqdm(total=total, initial=initial, desc=description, unit=unit, leave=False)
                     if self.enabled and sys.stderr.isatty() else None)

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting one step after each."""
        for item in items:
            yield item
            self.update()

    def update(self, count: int = 1, **fields: object) -> None:
        self.done += count
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(count)
            if fields:
                self._bar.set_postfix({k: _text(v) for k, v in fields.items()}, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.every or self.done == self.total:
            self._last_line = now
            log.info("%s", self.line(now, fields))

    def line(self, now: float, fields: dict) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.done - self._start_done) / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = (f"{self.description}: {self.done}/{self.total} {self.unit}{share}, {rate:.3g} {self.unit}/s, "
                f"{_duration(left) if left != float('inf') else '?'} left")
        if fields:
            text += "; " + ", ".join(f"{k} {_text(v)}" for k, v in fields.items())
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
