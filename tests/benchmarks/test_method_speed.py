"""Each method's speed against its per-frame baseline, measured side by side in one run
(`pytest tests/benchmarks --benchmark-only`).

For every method (tiny preset, random weights: speed does not depend on them) one
benchmark times whole key-interval cycles at k = 5 (STT: steps with M = 7 memory frames)
on a 128x224 frame, batch 1, in alternation with the per-frame run of the same image
segmentor: the paired timing every `bench run` row records (``paired_speed_ratio``: rounds
of the profiler's own timing of the paths whose FLOPs are counted, so TFC refines 20% of
the points on its non-key frames). The ratio (the method's FPS over the per-frame FPS: above
1 means faster than per-frame) is stored in the benchmark's extra_info and printed; it is
what ``bench check`` compares between runs, never an absolute time.
"""

import pytest
import torch

from vssbench.benchmark.profiler import paired_speed_ratio
from vssbench.methods.base import build_method

INTERVAL, MEMORY, CLASSES = 5, 7, 124
METHODS = ["copy:segformer-tiny", "tfc:tiny", "dff:tiny", "accel:tiny", "mpvss:tiny", "stt:tiny"]


@pytest.mark.parametrize("spec", METHODS)
def test_method_speed_against_its_per_frame_baseline(benchmark, spec):
    torch.manual_seed(0)
    method = build_method(spec, CLASSES).eval()
    per_frame = build_method(f"perframe:{method.segmentor_preset}", CLASSES).eval()
    frame = torch.randn(1, 3, 128, 224)
    if method.sweep_axis == "memory_frames":
        method.memory_frames, interval, schedule = MEMORY, 1, f"M={MEMORY}"
    else:
        interval, schedule = INTERVAL, f"k={INTERVAL}"
    speed = benchmark.pedantic(paired_speed_ratio, args=(method, per_frame, frame, interval), rounds=1, iterations=1)
    benchmark.extra_info.update(speedup_vs_per_frame=speed["ratio"], rounds=speed["rounds"], schedule=schedule,
                                baseline=per_frame.spec)
    print(f"\n{spec} {schedule} against {per_frame.spec}: {speed['ratio']:.2f}x "
          f"(rounds {', '.join(f'{r:.2f}' for r in speed['rounds'])})")
