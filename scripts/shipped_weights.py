"""Check retrained weights against the shipped ones, or ship them (vssbench/weights/synthetic/).

    python scripts/shipped_weights.py check .cache/shipped     # exit 1 unless every tensor is equal
    python scripts/shipped_weights.py update .cache/shipped    # copy them in and rewrite the manifest

``make shipped-weights`` trains the shipped methods from scratch into ``.cache/shipped`` (the command
recorded in the manifest) and runs ``check``; ``make shipped-weights-update`` runs ``update`` instead.
Which checkpoints: for each method of ``--methods`` (default: the Makefile's), the one ``bench run``
uses at seed 0, found as its training plan finds it in that cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from vssbench.benchmark.runner import sweep_plan
from vssbench.benchmark.shipped import FOLDER, tensors_sha256
from vssbench.benchmark.training import trained_as, training_plan
from vssbench.datasets.synthetic import SyntheticSpec, ensure_generated, load_synthetic
from vssbench.methods.base import build_method
from vssbench.methods.weights import file_sha256

METHODS = "perframe,copy,mpvss,tfc,dff,accel,stt,cffm,mrcfa,dcfm"
COMMAND = ("make shipped-weights (OMP_NUM_THREADS=2 bench run --methods " + METHODS
           + " --intervals 1 --memory 0 --max-videos 1 --speed-rounds 0 --cache-dir .cache/shipped)")


def trained(cache: Path, methods: str) -> dict[str, Path]:
    """Training plan name -> the checkpoint in ``cache`` that serves it (seed 0)."""
    root = ensure_generated(SyntheticSpec(), cache, progress=False)
    train_set = load_synthetic(root, "train")
    folder = cache / "checkpoints" / root.name
    found: dict[str, Path] = {}
    for spec, variant in sweep_plan(methods.split(","), None):
        torch.manual_seed(0)
        method = build_method(spec, train_set.num_classes, variant)
        last = training_plan(method, train_set, folder, seed=0)[-1]
        if not last.cached:
            sys.exit(f"{folder} has no trained {last.spec}: run `make shipped-weights` first")
        found[trained_as(method)] = last.checkpoint
    return found


def tensors_of(path: Path) -> str:
    return tensors_sha256(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("check", "update"))
    parser.add_argument("cache", type=Path, help="the --cache-dir the retraining used")
    parser.add_argument("--methods", default=METHODS)
    args = parser.parse_args()
    found = trained(args.cache, args.methods)
    if args.action == "check":
        shipped = json.loads((FOLDER / "manifest.json").read_text())
        expected = {name: entry["tensors_sha256"] for entry in shipped["files"] for name in entry["serves"]}
        failures = 0
        for name, path in found.items():
            same = tensors_of(path) == expected.get(name)
            failures += not same
            print(f"{'equal' if same else 'DIFFERENT':9} {name}: {path.name}")
        sys.exit(1 if failures else 0)
    files: dict[Path, list[str]] = {}
    for name, path in found.items():
        files.setdefault(path, []).append(name)
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir(parents=True)
    entries = []
    for path, names in files.items():
        shutil.copyfile(path, FOLDER / path.name)
        entries.append({"file": path.name, "sha256": file_sha256(path), "tensors_sha256": tensors_of(path),
                        "serves": names, "seed": 0})
    # the commit the training ran at, as `make shipped-weights-train` recorded it ("-dirty": with local changes)
    commit = (args.cache / "commit").read_text().strip()
    manifest = {
        "_about": "Weights shipped with vssbench (vssbench/benchmark/shipped.py): checkpoints bench run trained on "
                  "the default synthetic set at seed 0, as they are; scripts/shipped_weights.py wrote this file.",
        "dataset": "synthetic",
        "trained_by": {"command": COMMAND, "commit": commit, "torch": torch.__version__,
                       "threads": sorted({torch.load(p, map_location="cpu", weights_only=True)["metadata"]["threads"]
                                          for p in files})},
        "files": entries,
    }
    (FOLDER / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"shipped {len(entries)} files ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB) to {FOLDER}")


if __name__ == "__main__":
    main()
