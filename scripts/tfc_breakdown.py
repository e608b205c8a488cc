"""Where a TFC non-key step's time goes, part by part, beside each part's share of the counted FLOPs.

    python scripts/tfc_breakdown.py [--preset b1] [--resolution 480x853] [--repeats 5]

TFC reaches 68-75% of its FLOPs limit on a CPU at paper scale (reports/speed.md). This times the parts of
``TFC.nonkey_forward`` at the profiling operating point (20% of the points refined, as its FLOPs are
counted) one by one, with the inputs each part gets in the step, and counts each part's FLOPs with the
same counter as the cost block (fvcore): a part whose share of the time exceeds its share of the FLOPs
is where the FLOPs do not predict the time. Random weights, batch 1, medians of ``--repeats`` runs after
one warm-up. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vssbench.benchmark.profiler import count_flops
from vssbench.methods.base import build_method
from vssbench.methods.tfc import (KEY_STAGES, PROFILE_REFINE_FRACTION, _to_frame_size, cosine_similarity_map,
                                  unit_features)


def _median_ms(call, repeats: int) -> float:
    call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples)


def _tensor(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """One tensor of a part's output, for the FLOP counter's trace (a list of maps flattened into one)."""
    return output if isinstance(output, torch.Tensor) else torch.cat([t.flatten() for t in output])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="b1")
    parser.add_argument("--resolution", default="480x853")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    method = build_method(f"tfc:{args.preset}", 124).eval()
    size = tuple(int(v) for v in args.resolution.split("x"))
    key_frame, frame = torch.randn(1, 3, *size), torch.randn(1, 3, *size)
    with torch.no_grad():
        _, key = method.key_forward(key_frame)
        current = method.project_levels(method.segmentor.extract_stages(frame, KEY_STAGES))
        grid = current[0].shape[-2:]
        fused = method.finish_fuse(method.fuse_terms(current, 0, grid) + key.reused_fuse_terms)
        similarity = cosine_similarity_map(key.unit_level2, unit_features(current[1], grid))
        mixed = similarity.clamp(0, 1) * key.fused + (1 - similarity.clamp(0, 1)) * fused
        values = [method.refinement.attention.project_values(z) for z in current] + key.reused_values
        refined = method.refine(mixed, similarity, values, PROFILE_REFINE_FRACTION)
        parts = {
            "stages 1-2 of the backbone": lambda: method.segmentor.extract_stages(frame, KEY_STAGES),
            "projection and fusion (Eq. 2, 4)": lambda: method.finish_fuse(
                method.fuse_terms(method.project_levels(method.segmentor.extract_stages(frame, KEY_STAGES)), 0,
                                  grid) + key.reused_fuse_terms),
            "similarity and mixing (Eq. 5-7)": lambda: similarity.clamp(0, 1) * key.fused + (1 - similarity.clamp(
                0, 1)) * fused + cosine_similarity_map(key.unit_level2, unit_features(current[1], grid)).sum(),
            "value projection (Eq. 10)": lambda: [method.refinement.attention.project_values(z) for z in current],
            "sparse refinement, 20% of points (Eq. 8-11)": lambda: method.refine(mixed, similarity, values,
                                                                                  PROFILE_REFINE_FRACTION),
            "classifier and upsampling": lambda: _to_frame_size(method.classifier(refined), frame),
            "the whole non-key step": lambda: _to_frame_size(
                method.nonkey_forward(frame, key, refine_fraction=PROFILE_REFINE_FRACTION)[0], frame),
        }
        # the projection-and-fusion part runs stages 1-2 too: its own share is the difference
        times = {name: _median_ms(call, args.repeats) for name, call in parts.items()}
        flops = {name: count_flops(method, lambda call=call: _tensor(call()))[0] / 1e9 for name, call in parts.items()}
    backbone = "stages 1-2 of the backbone"
    fusion = "projection and fusion (Eq. 2, 4)"
    times[fusion] -= times[backbone]
    flops[fusion] -= flops[backbone]
    whole_ms, whole_gflops = times.pop("the whole non-key step"), flops.pop("the whole non-key step")
    print(f"TFC {args.preset} non-key step at {size[0]}x{size[1]}, {torch.get_num_threads()} threads: "
          f"{whole_ms:.1f} ms, {whole_gflops:.2f} GFLOPs (parts timed alone sum to {sum(times.values()):.1f} ms)\n")
    print("| part | ms | share of time | GFLOPs | share of FLOPs | ms per GFLOP |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in times:
        per = times[name] / flops[name] if flops[name] > 1e-6 else float("inf")
        print(f"| {name} | {times[name]:.1f} | {times[name] / whole_ms:.0%} | {flops[name]:.3f} | "
              f"{flops[name] / whole_gflops:.0%} | {per:.0f} |")


if __name__ == "__main__":
    main()
