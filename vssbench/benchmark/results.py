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
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TypedDict

import torch

import vssbench
from vssbench.files import atomic_path, exclusive_lock
from vssbench.limits import check_regular_file

RUN_SCHEMA = "vssbench.result/1"
PROFILE_SCHEMA = "vssbench.profile/1"


class RunRow(TypedDict):
    """A ``bench run`` row (docs/rows.md), its keys in the order the JSON holds them."""

    schema: str
    label: str
    method: str
    preset: str
    variant: str
    dataset: str
    split: str
    resolution: list[int] | str
    videos: dict | None  # None only in rows written before videos were recorded
    segmentor_preset: str | None
    schedule: dict
    status: str  # "ok" or "error"
    error: str | None
    metrics: dict | None
    cost: dict | None
    timing: dict | None
    predictions_dir: str | None
    weights: str | None  # "trained" or "random"; None only in rows written before it was recorded
    random_parameters: dict[str, int] | None
    checkpoint: dict | None
    env: dict
    config_hash: str
    created_at: str


class ProfileRow(TypedDict):
    """A ``bench profile`` row (docs/cost.md), its keys in the order the JSON holds them."""

    schema: str
    label: str
    method: str
    preset: str
    variant: str
    resolution: list[int]
    num_classes: int
    status: str
    error: str | None
    cost: dict | None
    env: dict
    config_hash: str


def run_row(config: dict, label: str, segmentor_preset: str, random: dict[str, int], checkpoint: dict | None,
            env: dict) -> RunRow:
    """A run row before scoring (status ok, no metrics yet): what ``config`` (the hashed configuration)
    ran, with which weights (``random``: parameters left at random, per part) and where."""
    return RunRow(schema=RUN_SCHEMA, label=label, method=config["method"], preset=config["preset"],
                  variant=config["variant"], dataset=config["dataset"], split=config["split"],
                  resolution=config["resolution"], videos=config["videos"], segmentor_preset=segmentor_preset,
                  schedule=config["schedule"], status="ok", error=None, metrics=None, cost=None, timing=None,
                  predictions_dir=None, weights="random" if random else "trained", random_parameters=random or None,
                  checkpoint=checkpoint, env=env, config_hash=config_hash(config),
                  created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def profile_row(config: dict, label: str, method: str, preset: str, env: dict) -> ProfileRow:
    """A profile row before measuring: ``config`` is its hashed configuration (spec, variant, resolution,
    classes, intervals, device and, for a memory method, its memory length)."""
    return ProfileRow(schema=PROFILE_SCHEMA, label=label, method=method, preset=preset, variant=config["variant"],
                      resolution=config["resolution"], num_classes=config["num_classes"], status="ok", error=None,
                      cost=None, env=env, config_hash=config_hash(config))


def upgrade_row(row: dict) -> dict:
    """A row as the current layout holds it, whichever earlier layout of its schema wrote it (a row of
    another schema is returned as it is). Earlier ``vssbench.result/1`` rows may lack ``videos`` (written
    before the selection was recorded), ``segmentor_preset``, ``weights`` and ``random_parameters``: each
    becomes None, unknown (readers take only ``weights: "random"`` as random); and ``checkpoint.declared``:
    they carried the checkpoint's own ``training`` and ``converted_from`` directly in ``checkpoint``."""
    if row.get("schema") != RUN_SCHEMA:
        return row
    checkpoint = row.get("checkpoint")
    if checkpoint is not None and "declared" not in checkpoint:
        declared = {key: checkpoint[key] for key in ("training", "converted_from") if key in checkpoint}
        checkpoint = {**{k: v for k, v in checkpoint.items() if k not in declared},
                      "declared": {"by": "checkpoint", "training": declared.get("training"),
                                   "converted_from": declared.get("converted_from")} if declared else None}
    defaults = {"videos": None, "segmentor_preset": None, "weights": None, "random_parameters": None}
    upgraded = {}
    for key in RunRow.__annotations__:  # the current order; fields no layout had stay absent
        if key in row or key in defaults:
            upgraded[key] = checkpoint if key == "checkpoint" else row.get(key, defaults.get(key))
    return upgraded | {key: value for key, value in row.items() if key not in upgraded}


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
    docs/rows.md). A claim of the file, not something vssbench checked: comparisons use it, provenance
    marks it."""
    return ((upgrade_row(row).get("checkpoint") or {}).get("declared") or {}).get("training")


class ResultFileError(ValueError):
    """A result file that cannot be read as rows: named with the line, and what to do about it."""


def load_rows(path: str | Path, skip_unreadable: bool = False, upgrade: bool = True) -> list[dict]:
    """Rows of a JSONL result file in the current layout (:func:`upgrade_row`; ``upgrade=False``: as the
    file holds them); a missing file has none. A line that is not a JSON object is a
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
        rows.append(upgrade_row(row) if upgrade else row)
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
        self.rows = load_rows(self.path, skip_unreadable=overwrite, upgrade=False)

    def finished(self, hash_: str) -> dict | None:
        """The finished (status ok) row with this configuration hash, if any, as the file holds it now."""
        self.rows = load_rows(self.path, skip_unreadable=True, upgrade=False)
        done = next((r for r in self.rows if r.get("config_hash") == hash_ and r.get("status") == "ok"), None)
        return upgrade_row(done) if done else None

    def put(self, row: dict) -> None:
        """Add ``row``, replacing any earlier row of the same configuration, and rewrite the file."""
        with exclusive_lock(self.path):
            on_disk = load_rows(self.path, skip_unreadable=True, upgrade=False)  # other rows' lines kept as written
            self.rows = [r for r in on_disk if r.get("config_hash") != row["config_hash"]] + [row]
            write_rows_atomically(self.path, self.rows)
