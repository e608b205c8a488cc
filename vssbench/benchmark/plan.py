"""What a ``bench run`` will do before its first row: the rows it will write, what it must train first
and what it finds cached, with the training time estimated for this machine.

``bench run`` prints the training part of the plan in its first lines whenever something is to be
trained; ``bench run --dry-run`` prints the whole plan and stops.

Estimates come from ``training_speed.json``: seconds per training iteration of each synthetic training,
measured on a reference machine by ``scripts/training_speed.py``, scaled by how long this machine takes
for a fixed calibration workload (:func:`calibration_seconds`, about a second) against the reference's
time for the same workload. A training without a measurement is listed with its iterations and no time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from vssbench.benchmark.runner import SweepSettings, row_label, sweep_plan, sweep_points
from vssbench.benchmark.training import PlannedTraining, training_plan
from vssbench.datasets.base import VideoDataset
from vssbench.methods.base import METHODS, build_method, parse_spec

SPEEDS = Path(__file__).with_name("training_speed.json")


@dataclass
class RunPlan:
    """The rows of a sweep, in order, and the trainings before them (each once, in the order they run)."""

    rows: list[str] = field(default_factory=list)
    trainings: list[PlannedTraining] = field(default_factory=list)

    @property
    def to_train(self) -> list[PlannedTraining]:
        return [t for t in self.trainings if not t.cached]


def plan_run(specs: list[str], variants: list[str] | None, seeds: list[int], settings: SweepSettings,
             num_classes: int, train_set: VideoDataset | None, cache_dir: Path | None,
             iterations: int | None = None, stage_iterations: int | None = None,
             given: set[str] = frozenset()) -> RunPlan:
    """The plan of ``bench run`` for these specs, variants and seeds. ``train_set`` None: nothing trains
    (a checkpoint is given for every method, or random weights); ``given``: the specs that have one."""
    plan, seen = RunPlan(), set()
    for seed in seeds:
        for spec, variant in sweep_plan(specs, variants):
            cls = METHODS[parse_spec(spec)[0]]
            torch.manual_seed(seed)
            method = build_method(spec, num_classes, variant)
            for _, _, suffix in sweep_points(cls, settings):
                label = row_label(method.name, method.preset, variant, cls.variants[0], suffix)
                plan.rows.append(label if len(seeds) == 1 else f"{label} (seed {seed})")
            if train_set is None or method.spec in given or "*" in given:
                continue
            for training in training_plan(method, train_set, cache_dir, iterations, seed, stage_iterations):
                key = (training.spec, seed, training.checkpoint or training.iterations)
                if key not in seen:
                    seen.add(key)
                    plan.trainings.append(training if len(seeds) == 1 else
                                          PlannedTraining(f"{training.spec} (seed {seed})", training.iterations,
                                                          training.checkpoint, training.cached))
    return plan


@cache
def _speeds() -> dict:
    return json.loads(SPEEDS.read_text())


def calibration_seconds(repeats: int = 3) -> float:
    """Seconds for one forward and backward pass of SegFormer-tiny on two 128 x 224 frames (the synthetic
    set's size), the median of ``repeats`` after a warm-up: the yardstick training estimates scale by."""
    from vssbench.methods.segmentors import build_segmentor

    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = build_segmentor("segformer-tiny", 8)
    frames = torch.randn(2, 3, 128, 224)
    torch.random.set_rng_state(state)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        model.decode(model.extract(frames), (128, 224)).float().mean().backward()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def estimate_seconds(training: PlannedTraining, scale: float) -> float | None:
    """Estimated seconds of ``training`` on this machine (``scale``: this machine's calibration time over
    the reference's), or None where its speed was never measured."""
    spec = training.spec.split(" (seed ")[0]
    per_iteration = _speeds()["seconds_per_iteration"].get(spec)
    return None if per_iteration is None else per_iteration * training.iterations * scale


def machine_scale() -> float:
    """This machine's calibration time over the reference machine's."""
    return calibration_seconds() / _speeds()["reference"]["calibration_seconds"]


def duration(seconds: float) -> str:
    """``2 min``, ``1 h 05 min``, ``40 s``: estimates, rounded."""
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def training_lines(plan: RunPlan, scale: float, where: str) -> list[str]:
    """The announcement of what will train before the first row: one line per training and a total."""
    if not plan.to_train:
        return []
    estimates = [estimate_seconds(t, scale) for t in plan.to_train]
    known = [e for e in estimates if e is not None]
    total = duration(sum(known)) + ("" if len(known) == len(estimates) else " for the ones measured")
    lines = [f"before its first row this run trains {len(plan.to_train)} model(s) on {where}, about {total} "
             f"on this machine (calibrated against {_speeds()['reference']['machine']}):"]
    width = max(len(t.spec) for t in plan.to_train)
    for training, estimate in zip(plan.to_train, estimates):
        lines.append(f"  {training.spec:<{width}}  {training.iterations:>5} iterations  "
                     + (f"~{duration(estimate)}" if estimate is not None else "time unknown (not measured)"))
    return lines


def plan_text(plan: RunPlan, scale: float | None, where: str) -> str:
    """The whole plan, as ``bench run --dry-run`` prints it."""
    lines = [f"{len(plan.rows)} row(s): " + ", ".join(plan.rows)]
    cached = [t for t in plan.trainings if t.cached]
    if plan.to_train and scale is not None:
        lines += training_lines(plan, scale, where)
    elif plan.to_train:
        lines.append(f"trains {len(plan.to_train)} model(s): " + ", ".join(
            f"{t.spec} ({t.iterations} iterations)" for t in plan.to_train))
    else:
        lines.append("trains nothing")
    if cached:
        lines.append("cached: " + ", ".join(f"{t.spec} ({t.checkpoint.name})" for t in cached if t.checkpoint))
    return "\n".join(lines)
