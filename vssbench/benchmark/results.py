"""Result rows: their configuration hash, reproducibility metadata, and atomic JSONL files.

A row is one JSON object per (method, preset, variant, dataset, split, schedule,
resolution, device). ``config_hash`` is the SHA-256 of the canonical JSON of exactly
those fields (plus the checkpoint digest and seed), so a sweep can tell finished rows
from missing ones and never recomputes a finished row unless asked to.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

import torch

import vssbench
from vssbench.files import atomic_path, exclusive_lock
from vssbench.limits import check_regular_file

SCHEMA = "vssbench.result/1"


def schedule_interval(schedule: dict) -> int:
    """The key-frame interval of a row's schedule (1 for a memory schedule, which has no key
    frames): the key of its per-interval cost entries (``gflops_avg``, ``fps``)."""
    return schedule.get("key_interval", 1)


def schedule_text(schedule: dict) -> str:
    """A row's schedule as tables print it: ``k=5`` or ``M=7``."""
    if schedule.get("type") == "memory":
        return f"M={schedule['memory_frames']}"
    return f"k={schedule['key_interval']}"


def config_hash(config: dict) -> str:
    """A short stable digest of a row's configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the device, as recorded next to every timing."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}"


@functools.cache
def git_commit() -> str | None:
    """The commit of the vssbench source tree, with ``-dirty`` when it has local changes.

    Read once per process: ``bench`` calls it when it starts, so every row of a long sweep names the
    code the process loaded, even if the tree is committed to while it runs."""
    source = Path(vssbench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment(device: torch.device | str, seed: int) -> dict:
    """Reproducibility metadata recorded in every row."""
    return {
        "vssbench_version": vssbench.__version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "seed": seed,
        "threads": torch.get_num_threads(),
    }


def _json_safe(value: object) -> object:
    """Replace NaN/inf floats by None so that every file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def declared_training(row: dict) -> dict | None:
    """The training record a row's checkpoint declares about itself (``checkpoint.declared.training``,
    docs/rows.md; rows without the ``declared`` block carry it as ``checkpoint.training``). A claim of
    the file, not something vssbench checked: comparisons use it, provenance marks it."""
    checkpoint = row.get("checkpoint") or {}
    if "declared" in checkpoint:
        return (checkpoint["declared"] or {}).get("training")
    return checkpoint.get("training")


class ResultFileError(ValueError):
    """A result file that cannot be read as rows: named with the line, and what to do about it."""


def load_rows(path: str | Path, skip_unreadable: bool = False) -> list[dict]:
    """Rows of a JSONL result file; a missing file has none. A line that is not a JSON object is a
    :class:`ResultFileError` naming the file and line, or with ``skip_unreadable`` is left out."""
    path = Path(path)
    if not path.exists():
        return []
    check_regular_file(path, "result file", ResultFileError)
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as error:
            if skip_unreadable:
                continue
            raise ResultFileError(f"{path}:{number} is not a result row ({error}); expected one JSON object per "
                                  "line. The file was left as it is: fix or remove the line, or re-run with "
                                  "--overwrite, which drops unreadable lines") from None
        rows.append(row)
    return rows


def write_rows_atomically(path: str | Path, rows: Iterable[dict]) -> None:
    """Write rows to a temporary file beside ``path`` and rename it over ``path`` (:func:`atomic_path`)."""
    with atomic_path(path) as temporary, open(temporary, "w") as out:
        for row in rows:
            out.write(json.dumps(_json_safe(row), allow_nan=False) + "\n")


class ResultFile:
    """A JSONL result file that rows are added to one at a time, each write atomic and safe against
    other processes writing the same file: each :meth:`put` takes an exclusive lock, re-reads the
    file and merges its row into what is there, so N concurrent writers keep every row exactly once.
    ``overwrite`` drops lines that are not rows instead of refusing the file."""

    def __init__(self, path: str | Path, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.rows = load_rows(self.path, skip_unreadable=overwrite)

    def finished(self, hash_: str) -> dict | None:
        """The finished (status ok) row with this configuration hash, if any, as the file holds it now."""
        self.rows = load_rows(self.path, skip_unreadable=True)
        return next((r for r in self.rows if r.get("config_hash") == hash_ and r.get("status") == "ok"), None)

    def put(self, row: dict) -> None:
        """Add ``row``, replacing any earlier row of the same configuration, and rewrite the file."""
        with exclusive_lock(self.path):
            on_disk = load_rows(self.path, skip_unreadable=True)
            self.rows = [r for r in on_disk if r.get("config_hash") != row["config_hash"]] + [row]
            write_rows_atomically(self.path, self.rows)
