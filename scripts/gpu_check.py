"""The GPU check: every paper preset at 480 x 853 timed on a CUDA device, fp32 and AMP, in one short call.

    python scripts/gpu_check.py [--out reports/gpu-check.md] [--presets SPEC:k,...] [--rounds 3]
    make gpu-check

For each preset (method, paper preset, the paper's key-frame interval): random weights (speed does not
depend on their values), batch 1, a 480 x 853 frame. It times the key and non-key paths whose FLOPs
vssbench counts (``profiler.measure_latency``: CUDA events, after warm-up) in fp32 and under
``torch.autocast`` (fp16), the paired speed ratio against the preset's per-frame segmentor in fp32
(``profiler.paired_speed_ratio``, the two timed in alternation), and the peak memory of a key and a
non-key step (``profiler.peak_memory``: ``torch.cuda.max_memory_allocated`` growth). The report names the
device, torch and CUDA versions and every setting; a row that fails (out of memory, an operator without
an fp16 kernel) says why and the others go on.

Where no CUDA device is present it prints why and exits 0 without writing anything, so that it can sit
in a Makefile every machine runs. ``--device cpu`` runs the same code on a CPU (perf_counter instead of
CUDA events, no AMP, peak RSS growth instead of CUDA memory): the tests use it with tiny presets.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from vssbench.benchmark.speed_report import PAPER_PRESETS as SPEED_PRESETS

# (spec, the paper's key-frame interval): the speed report's paper presets (vssbench.benchmark.speed_report),
# every one at the one resolution the check runs.
PAPER_PRESETS = [(preset.spec, preset.interval) for preset in SPEED_PRESETS]
NUM_CLASSES = 124


def check_preset(spec: str, interval: int, size: tuple[int, int], device: torch.device, rounds: int,
                 amp: bool) -> dict:
    from vssbench.benchmark.profiler import (
        measure_latency,
        paired_speed_ratio,
        peak_memory,
    )
    from vssbench.benchmark.runner import per_frame_reference
    from vssbench.methods.base import build_method

    torch.manual_seed(0)
    method = build_method(spec, NUM_CLASSES).to(device).eval()
    frame = torch.randn(1, 3, *size, device=device)
    row: dict = {"spec": spec, "interval": interval}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    row["peak_mib"] = peak_memory(method, frame)["peak_memory_mib"] or 0.0
    with torch.inference_mode():
        row["fp32"] = measure_latency(method, frame, [interval], repeats=5, warmup=2)
        if amp:
            with torch.autocast(device.type, dtype=torch.float16):
                row["amp"] = measure_latency(method, frame, [interval], repeats=5, warmup=2)
        if method.name != "perframe" and method.segmentor_preset:
            reference = per_frame_reference(method, device.type)
            row["ratio"] = paired_speed_ratio(method, reference, frame, interval, rounds=rounds)
    return row


def _ms(latency: dict | None, path: str) -> str:
    value = (latency or {}).get(f"latency_ms_{path}") or {}
    return f"{value['median']:.1f}" if value else "-"


def report(rows: list[dict], device: torch.device, size: tuple[int, int], rounds: int, seconds: float) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    lines = [
        "# GPU check",
        "",
        f"`python scripts/gpu_check.py` on {name} ({device.type}), torch {torch.__version__}, CUDA "
        f"{torch.version.cuda or '-'}; {size[0]} x {size[1]}, batch 1, {NUM_CLASSES} classes, random weights; "
        f"latency: median of 5 timed cycles after 2 warm-up cycles, CUDA events; AMP: torch.autocast fp16; "
        f"speed ratio: FPS over the per-frame segmentor's at the interval, median of {rounds} alternating "
        f"rounds, fp32; peak memory: a key and a non-key step's max_memory_allocated growth. "
        f"{seconds:.0f} s in all.",
        "",
        "| preset | k | key ms fp32 | non-key ms fp32 | key ms AMP | non-key ms AMP | FPS fp32 | FPS AMP | "
        "ratio vs per-frame | peak MiB | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        k = str(row["interval"])
        fps = lambda latency: f"{latency['fps'][k]:.1f}" if latency else "-"  # noqa: E731
        ratio = row.get("ratio", {}).get("ratio")
        lines.append(f"| {row['spec']} | {k} | {_ms(row.get('fp32'), 'key')} | {_ms(row.get('fp32'), 'nonkey')} | "
                     f"{_ms(row.get('amp'), 'key')} | {_ms(row.get('amp'), 'nonkey')} | {fps(row.get('fp32'))} | "
                     f"{fps(row.get('amp'))} | {'-' if ratio is None else f'{ratio:.2f}'} | "
                     f"{row.get('peak_mib', 0):.0f} | {row.get('error') or 'ok'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/gpu-check.md"))
    parser.add_argument("--presets", help="comma-separated SPEC:k (default: every paper preset)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--resolution", default="480x853")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu-check: skipped: no CUDA device here (torch.cuda.is_available() is False); run it where a GPU is "
              "lent (docs/cost.md)")
        return 0
    size = tuple(int(v) for v in args.resolution.split("x"))
    presets = ([(item.rsplit(":", 1)[0], int(item.rsplit(":", 1)[1])) for item in args.presets.split(",")]
               if args.presets else PAPER_PRESETS)
    started, rows = time.perf_counter(), []
    for spec, interval in presets:
        print(f"gpu-check: {spec} k={interval}", flush=True)
        try:
            rows.append(check_preset(spec, interval, size, device, args.rounds, amp=device.type == "cuda"))
        except Exception as error:  # noqa: BLE001 - a failing preset is a row, the others go on
            rows.append({"spec": spec, "interval": interval, "error": f"{type(error).__name__}: {error}"[:200]})
            traceback.print_exc()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    text = report(rows, device, size, args.rounds, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
