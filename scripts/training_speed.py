"""Measure seconds per training iteration of each synthetic training a sweep needs, and this machine's
calibration time, into vssbench/benchmark/training_speed.json (what ``bench run`` estimates from).

    python scripts/training_speed.py --methods perframe,copy,mpvss,tfc,dff,accel,stt,cffm,mrcfa,dcfm \\
        --machine "2-core CI machine" > vssbench/benchmark/training_speed.json

Each training (as ``bench run`` would plan it on an empty cache) runs its synthetic recipe for 2 and
then for 7 iterations from its seed-0 initialisation; the difference over 5 iterations is its speed
(start-up and the first iterations' warm-up cancel out). Run it alone on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from vssbench.benchmark.plan import calibration_seconds
from vssbench.benchmark.runner import sweep_plan
from vssbench.benchmark.training import TrainingOptions, train, training_plan
from vssbench.datasets.synthetic import SyntheticSpec, ensure_generated, load_synthetic
from vssbench.methods.base import build_method
from vssbench.recipes import recipe_for


def seconds_per_iteration(spec: str, train_set) -> float:
    """(time of 7 iterations - time of 2) / 5, the spec's synthetic recipe, seed 0."""
    name, _, variant = spec.partition(" (")
    times = []
    for iterations in (2, 7):
        torch.manual_seed(0)
        method = build_method(name, train_set.num_classes, variant.rstrip(")") or None)
        recipe = recipe_for(method, "synthetic", "synthetic").with_overrides(iterations=iterations)
        start = time.perf_counter()
        train(method, train_set, recipe, TrainingOptions(progress=False), seed=0)
        times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", required=True, help="comma-separated METHOD[:PRESET] of the sweep")
    parser.add_argument("--machine", required=True, help="how the reports name this machine")
    args = parser.parse_args()
    train_set = load_synthetic(ensure_generated(SyntheticSpec()), "train")
    specs = []
    with tempfile.TemporaryDirectory() as empty:
        for spec, variant in sweep_plan(args.methods.split(","), None):
            torch.manual_seed(0)
            method = build_method(spec, train_set.num_classes, variant)
            for training in training_plan(method, train_set, Path(empty)):
                if training.spec not in specs:
                    specs.append(training.spec)
    speeds = {}
    for spec in specs:
        speeds[spec] = round(seconds_per_iteration(spec, train_set), 4)
        print(f"{spec}: {speeds[spec]} s/it", file=sys.stderr, flush=True)
    record = {
        "_about": "Seconds per training iteration of the synthetic trainings, measured by scripts/training_speed.py "
                  "(its docstring has the command) on the reference machine, and that machine's calibration time "
                  "(vssbench.benchmark.plan.calibration_seconds); bench run scales them by this machine's.",
        "reference": {"machine": args.machine, "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "calibration_seconds": round(calibration_seconds(), 4)},
        "seconds_per_iteration": speeds,
    }
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
