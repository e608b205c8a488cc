"""Weights shipped with vssbench: the synthetic set's trained tiny models, so that the first command
(``make run``, ``bench run --shipped-weights``) compares every method in minutes instead of training
for an hour first.

They are the checkpoints ``bench run`` trains and caches on the default synthetic set with seed 0,
copied as they are into ``vssbench/weights/synthetic/`` with ``manifest.json``: each file's sha256,
the sha256 of its tensors alone (names, dtypes, shapes and bytes: what "bit for bit" compares, since a
checkpoint's record names the folder it was trained from), the trainings it serves (as a training plan
names them, :func:`~vssbench.benchmark.training.trained_as`), and the command, commit, torch version and
thread count that trained them. ``make shipped-weights`` retrains them from scratch in a cache of its
own and checks every tensor digest against the manifest (``scripts/shipped_weights.py``).

Without ``--shipped-weights``, ``bench run`` trains on an empty cache as always; with it, rows name the
shipped file (``checkpoint.path``, its sha256, the training record it carries) and say
``checkpoint.shipped``: the manifest's command and commit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from vssbench.methods.weights import CheckpointError, file_sha256

FOLDER = Path(__file__).resolve().parents[1] / "weights" / "synthetic"


@dataclass(frozen=True)
class Shipped:
    """One shipped checkpoint: its file, what it serves, and how it was made."""

    file: Path
    sha256: str
    tensors_sha256: str
    serves: tuple[str, ...]  # training plan names: "perframe:segformer-tiny", "tfc:tiny (sparse-msda-0.8)"
    seed: int
    trained_by: dict

    def row_block(self) -> dict:
        """What a row records under ``checkpoint.shipped``."""
        return {"manifest": str(self.file.parent / "manifest.json"), **self.trained_by}


def manifest_data(folder: Path | None = None) -> dict:
    """The manifest as written (empty where nothing is shipped)."""
    path = (folder or FOLDER) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {"files": [], "trained_by": {}, "dataset": None}


def shipped_dataset(folder: Path | None = None) -> str | None:
    """The dataset the shipped weights were trained on (its rows' name: ``synthetic``)."""
    return manifest_data(folder).get("dataset")


@cache
def manifest(folder: Path) -> dict[tuple[str, int], Shipped]:
    """(training plan name, seed) -> the shipped checkpoint serving it."""
    data = manifest_data(folder)
    index = {}
    for entry in data["files"]:
        shipped = Shipped(folder / entry["file"], entry["sha256"], entry["tensors_sha256"], tuple(entry["serves"]),
                          entry["seed"], data["trained_by"])
        for name in shipped.serves:
            index[name, shipped.seed] = shipped
    return index


def shipped_for(name: str, seed: int, folder: Path | None = None) -> Shipped:
    """The shipped checkpoint for the training ``name`` at ``seed``, its file checked against the manifest;
    a :class:`CheckpointError` (exit 2) naming what is shipped where there is none or the file changed."""
    index = manifest(folder or FOLDER)
    shipped = index.get((name, seed))
    if shipped is None:
        available = sorted({f"{n} (seed {s})" for n, s in index})
        raise CheckpointError(f"--shipped-weights: vssbench ships no weights for {name} at seed {seed}; it ships "
                              f"{', '.join(available) or 'none'} (drop --shipped-weights to train it)")
    if not shipped.file.is_file() or file_sha256(shipped.file) != shipped.sha256:
        raise CheckpointError(f"--shipped-weights: {shipped.file} is missing or differs from its manifest's sha256 "
                              f"{shipped.sha256[:12]}; expected the file as shipped (reinstall vssbench, or run "
                              "`make shipped-weights`)")
    return shipped


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: equal exactly when the
    weights are equal bit for bit, whatever else the file records."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{list(state[name].shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
