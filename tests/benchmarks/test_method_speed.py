"""Each method's speed against its per-frame baseline, measured side by side in one run
(`pytest tests/benchmarks --benchmark-only`).

For every method (tiny preset, random weights: speed does not depend on them) one
benchmark times whole key-interval cycles at k = 5 (STT: steps with M = 7 memory frames)
on a 128x224 frame, batch 1, and the per-frame run of the same image segmentor right
after it. The ratio (per-frame time per frame / method time per frame: above 1 means
faster than per-frame) is stored in the benchmark's extra_info and printed; it is what
``bench check`` compares between runs, never an absolute time.
"""

import time

import pytest
import torch

from vssbench.methods.base import build_method

INTERVAL, MEMORY, CYCLES, CLASSES = 5, 7, 6, 124
METHODS = ["copy:segformer-tiny", "tfc:tiny", "dff:tiny", "accel:tiny", "mpvss:tiny", "stt:tiny"]


def _seconds_per_frame(method, frame: torch.Tensor) -> float:
    """Median over cycles of the per-frame time of one key-interval cycle (or one memory step)."""
    samples = []
    with torch.inference_mode():
        if method.sweep_axis == "memory_frames":
            method.memory_frames = MEMORY
            method.reset()
            for _ in range(MEMORY):
                method.step(frame, True)
            for _ in range(CYCLES + 1):
                started = time.perf_counter()
                method.step(frame, True)
                samples.append(time.perf_counter() - started)
        else:
            cycle = INTERVAL if method.uses_key_frames else 1
            for _ in range(CYCLES + 1):
                method.reset()
                started = time.perf_counter()
                for t in range(cycle):
                    method.step(frame, t == 0)
                samples.append((time.perf_counter() - started) / cycle)
    samples = sorted(samples[1:])  # the first cycle warms up
    return samples[len(samples) // 2]


@pytest.mark.parametrize("spec", METHODS)
def test_method_speed_against_its_per_frame_baseline(benchmark, spec):
    torch.manual_seed(0)
    method = build_method(spec, CLASSES).eval()
    per_frame = build_method(f"perframe:{method.segmentor_preset}", CLASSES).eval()
    frame = torch.randn(1, 3, 128, 224)
    ours = benchmark.pedantic(_seconds_per_frame, args=(method, frame), rounds=1, iterations=1)
    reference = _seconds_per_frame(per_frame, frame)
    ratio = reference / ours
    schedule = f"M={MEMORY}" if method.sweep_axis == "memory_frames" else f"k={INTERVAL}"
    benchmark.extra_info.update(method_ms_per_frame=1000 * ours, per_frame_ms=1000 * reference,
                                speedup_vs_per_frame=ratio, schedule=schedule, baseline=per_frame.spec)
    print(f"\n{spec} {schedule}: {1000 * ours:.2f} ms/frame, {per_frame.spec} {1000 * reference:.2f} ms/frame: "
          f"{ratio:.2f}x")
