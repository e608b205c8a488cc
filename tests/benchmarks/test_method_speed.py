"""Each method's speed against its per-frame baseline, measured side by side in one run
(`pytest tests/benchmarks --benchmark-only`).

For every method (tiny preset, random weights: speed does not depend on them) one
benchmark times whole key-interval cycles at k = 5 (STT: steps with M = 7 memory frames)
on a 128x224 frame, batch 1, with the profiler's own timing (``measure_latency``: the
paths whose FLOPs are counted, so TFC refines 20% of the points on its non-key frames),
and the per-frame run of the same image segmentor right after it. The ratio (the method's
FPS over the per-frame FPS: above 1 means faster than per-frame) is stored in the
benchmark's extra_info and printed; it is what ``bench check`` compares between runs,
never an absolute time.
"""

import pytest
import torch

from vssbench.benchmark.profiler import measure_latency
from vssbench.methods.base import build_method

INTERVAL, MEMORY, CYCLES, CLASSES = 5, 7, 6, 124
METHODS = ["copy:segformer-tiny", "tfc:tiny", "dff:tiny", "accel:tiny", "mpvss:tiny", "stt:tiny"]


def _frames_per_second(method, frame: torch.Tensor) -> float:
    """FPS at k = INTERVAL from medians over CYCLES timed cycles (or memory steps), one warm-up first."""
    if method.sweep_axis == "memory_frames":
        method.memory_frames = MEMORY
    return measure_latency(method, frame, [INTERVAL], repeats=CYCLES, warmup=1)["fps"][str(INTERVAL)]


@pytest.mark.parametrize("spec", METHODS)
def test_method_speed_against_its_per_frame_baseline(benchmark, spec):
    torch.manual_seed(0)
    method = build_method(spec, CLASSES).eval()
    per_frame = build_method(f"perframe:{method.segmentor_preset}", CLASSES).eval()
    frame = torch.randn(1, 3, 128, 224)
    ours = benchmark.pedantic(_frames_per_second, args=(method, frame), rounds=1, iterations=1)
    reference = _frames_per_second(per_frame, frame)
    ratio = ours / reference
    schedule = f"M={MEMORY}" if method.sweep_axis == "memory_frames" else f"k={INTERVAL}"
    benchmark.extra_info.update(method_fps=ours, per_frame_fps=reference, speedup_vs_per_frame=ratio,
                                schedule=schedule, baseline=per_frame.spec)
    print(f"\n{spec} {schedule}: {1000 / ours:.2f} ms/frame, {per_frame.spec} {1000 / reference:.2f} ms/frame: "
          f"{ratio:.2f}x")
