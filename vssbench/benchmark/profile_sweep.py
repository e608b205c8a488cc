"""``bench profile``'s sweep: each method's cost on a random frame at a given resolution, one row per
(method, variant[, memory length]), without a dataset (docs/cost.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vssbench.benchmark.profiler import (cost_block, latency_steps, measure_latency, paired_speed_ratios,
                                         paired_steps)
from vssbench.benchmark.results import ProfileRow, ResultFile, environment, profile_row
from vssbench.benchmark.runner import per_frame_reference, row_label, sweep_plan, timed_against_per_frame
from vssbench.methods.base import build_method
from vssbench.progress import Progress


@dataclass
class ProfileSettings:
    specs: list[str]
    resolution: tuple[int, int]  # (H, W) of the random frame
    num_classes: int
    intervals: list[int]
    memory_frames: list[int] = field(default_factory=lambda: [0])  # STT's rows, one per memory length
    variants: list[str] | None = None  # None: each method's default variant
    device: str = "cpu"
    seed: int = 0
    latency: bool = True  # False: FLOPs and parameters only
    repeats: int = 5  # timed clips per interval
    warmup: int = 1
    speed_rounds: int = 5  # paired rounds against the per-frame segmentor; 0: none


def profile_sweep(settings: ProfileSettings, results: ResultFile) -> list[ProfileRow]:
    """Profile every (method, variant) of ``settings``, writing each row to ``results`` as it is done; a
    method that fails becomes an error row and the sweep goes on."""
    height, width = settings.resolution
    rows = []
    for spec, variant in sweep_plan(settings.specs, settings.variants):
        torch.manual_seed(settings.seed)
        method = build_method(spec, settings.num_classes, variant).to(settings.device).eval()
        frame = torch.randn(1, 3, height, width, device=settings.device)
        timed_against = settings.speed_rounds and settings.latency and timed_against_per_frame(method)
        reference = per_frame_reference(method, settings.device) if timed_against else None
        # Methods with a memory instead of key frames (STT) get one row per memory length.
        for memory in settings.memory_frames if method.sweep_axis == "memory_frames" else [None]:
            suffix = None
            if memory is not None:
                method.memory_frames, suffix = memory, f"m{memory}"
            config = {"kind": "profile", "spec": method.spec, "variant": method.variant, "resolution": [height, width],
                      "num_classes": settings.num_classes, "intervals": settings.intervals, "device": settings.device,
                      **({"memory_frames": memory} if memory is not None else {})}
            label = row_label(method.name, method.preset, method.variant, type(method).variants[0], suffix)
            row = profile_row(config, label, method.name, method.preset, environment(settings.device, settings.seed))
            steps = ((latency_steps(method, settings.intervals, settings.repeats, settings.warmup) if settings.latency
                      else 0)
                     + (paired_steps(method, reference, settings.intervals, settings.speed_rounds)
                        if reference is not None else 0))
            with Progress(steps, f"profiling {label}", unit="step", every=5.0) as progress:
                try:
                    latency = (measure_latency(method, frame, settings.intervals, settings.repeats, settings.warmup,
                                               on_step=progress.update) if settings.latency else None)
                    row["cost"] = cost_block(method, frame, settings.intervals, latency)
                    if reference is not None:
                        row["cost"]["speed_vs_per_frame"] = paired_speed_ratios(
                            method, reference, frame, settings.intervals, settings.speed_rounds,
                            on_step=progress.update)
                except Exception as error:  # noqa: BLE001 - a failing method becomes an error row
                    row.update(status="error", error=f"{type(error).__name__}: {error}")
            results.put(row)
            rows.append(row)
    return rows
