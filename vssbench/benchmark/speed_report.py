"""``bench profile --speed-report``: every method's paper presets timed against their per-frame segmentor at
the paper's resolution and key-frame interval, beside the paper's FPS ratio and the FLOPs limit.

For each preset the method and its per-frame segmentor (random weights: speed does not depend on their
values) step through a random frame of the paper's resolution, timed in alternation round by round
(:func:`~vssbench.benchmark.profiler.paired_speed_ratio`: a change in the machine's speed shifts both
alike). The FLOPs limit is the ratio the FLOPs alone predict: the per-frame segmentor's GFLOPs over the
method's average over a 15-frame clip at the interval (the papers' averaging). The share of the limit
reached is the measured ratio over it: under 1 where the method's time is not its FLOPs (Python and
launch overhead, memory-bound operations, work the FLOP counter does not see).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vssbench.benchmark.profiler import (
    average_over_clip,
    method_flops,
    paired_speed_ratio,
    peak_memory,
)
from vssbench.benchmark.results import device_name
from vssbench.benchmark.runner import per_frame_reference
from vssbench.methods.base import build_method


@dataclass(frozen=True)
class PaperPreset:
    """A method's preset as a paper times it: the interval, the resolution and, where the paper prints
    them, its FPS and its per-frame segmentor's (``source`` says which table and device)."""

    spec: str
    interval: int  # key-frame interval (1: a method without key frames)
    resolution: tuple[int, int] = (480, 853)
    num_classes: int = 124
    paper_fps: float | None = None
    paper_reference_fps: float | None = None
    source: str = ""

    @property
    def paper_ratio(self) -> float | None:
        if self.paper_fps is None or self.paper_reference_fps is None:
            return None
        return self.paper_fps / self.paper_reference_fps


MPVSS_T1 = "MPVSS Table 1, V100"
PAPER_PRESETS = (
    PaperPreset("mpvss:r50", 5, paper_fps=33.93, paper_reference_fps=19.4, source=MPVSS_T1),
    PaperPreset("mpvss:r101", 5, paper_fps=32.38, paper_reference_fps=16.90, source=MPVSS_T1),
    PaperPreset("mpvss:swin-t", 5, paper_fps=32.86, paper_reference_fps=17.13, source=MPVSS_T1),
    PaperPreset("tfc:b0", 4, paper_fps=38.2, paper_reference_fps=37.5, source="TFC Table 1, GPU not named"),
    PaperPreset("tfc:b1", 4, paper_fps=37.1, paper_reference_fps=34.9, source="TFC Table 1, GPU not named"),
    PaperPreset("tfc:b5", 4, paper_fps=37.8, paper_reference_fps=26.2, source="TFC Table 1, GPU not named"),
    PaperPreset("cffm:b2", 1, paper_fps=10.08, paper_reference_fps=16.16, source=MPVSS_T1),
    PaperPreset("mrcfa:b2", 1, paper_fps=10.7, paper_reference_fps=16.16, source=MPVSS_T1),
    PaperPreset("stt:r18", 1, source="no FPS in the STT text here"),
    PaperPreset("dcfm:mitb2", 2, source="DCFM's tables not available here"),
    PaperPreset("dcfm:mitb5", 2, source="DCFM's tables not available here"),
    PaperPreset("dff:r101", 5, (1024, 2048), 19, source="MPVSS Table 2 (Cityscapes) prints no FPS"),
    PaperPreset("accel:r101+r18", 5, (1024, 2048), 19, source="MPVSS Table 2 (Cityscapes) prints no FPS"),
)


def measure_preset(preset: PaperPreset, rounds: int, device: str = "cpu",
                   on_step: Callable[[], None] | None = None) -> dict:
    """One preset's row: FLOPs of both sides, the paired ratio (median and rounds), the limit, the share
    reached and both sides' peak memory of a key and a non-key step."""
    torch.manual_seed(0)
    method = build_method(preset.spec, preset.num_classes).to(device).eval()
    reference = per_frame_reference(method, device)
    frame = torch.randn(1, 3, *preset.resolution, device=device)
    interval = preset.interval if method.uses_key_frames else 1
    with torch.no_grad():
        ours, theirs = method_flops(method, frame), method_flops(reference, frame)
        gflops = average_over_clip(ours["gflops_key"], ours["gflops_nonkey"], interval)
        memory, reference_memory = peak_memory(method, frame), peak_memory(reference, frame)
        ratio = paired_speed_ratio(method, reference, frame, interval, rounds, frames_per_round=max(interval, 3),
                                   on_step=on_step)
    limit = theirs["gflops_key"] / gflops
    return {"spec": preset.spec, "reference": reference.spec, "interval": interval,
            "resolution": list(preset.resolution), "gflops": round(gflops, 2),
            "reference_gflops": round(theirs["gflops_key"], 2), "limit": round(limit, 3),
            "ratio": ratio["ratio"], "rounds": ratio["rounds"], "share": round(ratio["ratio"] / limit, 3),
            "paper_ratio": preset.paper_ratio and round(preset.paper_ratio, 3), "source": preset.source,
            "peak_mib": memory["peak_memory_mib"], "reference_peak_mib": reference_memory["peak_memory_mib"],
            "peak_kind": memory["peak_memory"], "status": "ok"}


def speed_report(rows: list[dict], device: str, rounds: int, command: str, seconds: float) -> str:
    """reports/speed.md: the table and what each column is."""
    torch_device = torch.device(device)
    lines = [
        "# Speed at paper scale",
        "",
        f"`{command}` on {device_name(torch_device)} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; {seconds / 60:.0f} min in all.",
        "",
        "Random weights, batch 1, a random frame at the paper's resolution. **Ratio**: the method's FPS over its "
        "per-frame segmentor's at the paper's key-frame interval, the two timed in alternation (one key-interval "
        f"cycle, at least 3 frames, a side per round after a warm-up cycle), median of {rounds} rounds, the rounds "
        "after it. **Limit**: the per-frame segmentor's GFLOPs over the method's average over a 15-frame clip "
        "(vssbench's FLOP count). **Share**: ratio over limit. **Paper**: the paper's FPS over its per-frame "
        "segmentor's, from the table named. **Peak MiB**: a key and a non-key step's peak "
        f"({rows[0]['peak_kind'] if rows and rows[0].get('peak_kind') else '-'}), method / per-frame.",
        "",
        "| preset | per-frame | resolution | k | GFLOPs | per-frame GFLOPs | limit | ratio (rounds) | share of limit "
        "| paper ratio (source) | peak MiB | status |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|---|---|",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['spec']} | - | {'x'.join(map(str, row['resolution']))} | {row['interval']} | - | - | "
                         f"- | - | - | - | - | {row['status']} |")
            continue
        rounds_text = ", ".join(f"{r:.2f}" for r in row["rounds"])
        paper = f"{row['paper_ratio']:.2f} ({row['source']})" if row["paper_ratio"] else f"- ({row['source']})"
        lines.append(
            f"| {row['spec']} | {row['reference']} | {'x'.join(map(str, row['resolution']))} | {row['interval']} | "
            f"{row['gflops']:.1f} | {row['reference_gflops']:.1f} | {row['limit']:.2f} | {row['ratio']:.2f} "
            f"({rounds_text}) | {row['share']:.0%} | {paper} | {row['peak_mib']} / {row['reference_peak_mib']} | ok |")
    below = [row["spec"] for row in rows if row["status"] == "ok" and row["share"] < 0.8]
    if below:
        lines += ["", f"Under 80% of the FLOPs limit: {', '.join(below)}. "
                  f"Median share over the measured presets: "
                  f"{statistics.median(r['share'] for r in rows if r['status'] == 'ok'):.0%}."]
    return "\n".join(lines) + "\n"


def run_speed_report(presets: list[PaperPreset], rounds: int, device: str = "cpu",
                     on_preset: Callable[[PaperPreset], None] | None = None,
                     on_rows: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """A row per preset; one that fails (memory, an operator) says why and the others go on. ``on_rows``
    gets the rows so far after each preset (the command rewrites the report, so an interrupted run keeps
    what it measured)."""
    rows = []
    for preset in presets:
        if on_preset:
            on_preset(preset)
        try:
            rows.append(measure_preset(preset, rounds, device))
        except Exception as error:  # noqa: BLE001 - a failing preset is a row of the report
            rows.append({"spec": preset.spec, "interval": preset.interval, "resolution": list(preset.resolution),
                         "status": f"error: {type(error).__name__}: {error}"[:200]})
        if on_rows:
            on_rows(rows)
    return rows
