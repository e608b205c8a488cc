"""What vssbench's harness alone sustains per CPU core at VSPW scale, against the fastest published method.

    python scripts/harness_scale.py [--out reports/harness.md] [--videos 2] [--frames 30] [--rounds 3]

Generates (once, under ``$VSSBENCH_CACHE/harness/``) a VSPW-layout set at 480 x 853 with the synthetic
generator (``bench data synthetic --size 480x853``) and reads it as ``--dataset vspw`` (124 classes, the
label shift), then times, on one thread, each per-frame piece of work ``bench run`` does besides the
method: loading a frame (JPEG decode, keep-ratio resize, ImageNet normalisation, PNG label decode:
``FrameStream.load``), making tensors of it, and accumulating mIoU, WIoU and mVC for a 124-class
prediction at the label's resolution (``SegmentationMetrics.update``), plus writing one result row.
Upsampling the scores and the argmax run on the method's device and are left out. The best of
``--rounds`` passes is kept (a shared machine's timings vary).

The report sets the harness's frames per second per worker against TFC-B0's 38.2 frames per second
(TFC Table 1, the fastest method of the papers vssbench reproduces) and says how many loader workers
8 such GPUs would need.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

FASTEST_FPS = 38.2  # TFC Table 1: SegFormer + TFC, MiT-B0, frames per second
GPUS = 8


def dataset_root(cache: Path, videos: int, frames: int) -> Path:
    root = cache / "harness" / f"vspw-480x853-{videos}x{frames}"
    if not (root / "meta.json").is_file():
        subprocess.run([sys.executable, "-m", "vssbench", "-q", "data", "synthetic", "--out", str(root), "--train-videos",
                        "1", "--val-videos", str(videos), "--frames", str(frames), "--size", "480x853"], check=True)
    return root


def best(seconds: list[float]) -> float:
    return min(seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/harness.md"))
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from vssbench.benchmark import native
    from vssbench.benchmark.metrics import SegmentationMetrics
    from vssbench.benchmark.results import ResultFile, device_name
    from vssbench.datasets.base import FrameStream, as_tensors
    from vssbench.datasets.synthetic import default_cache_dir
    from vssbench.datasets.vspw import VSPWDataset

    root = dataset_root(Path(os.environ.get("VSSBENCH_CACHE") or default_cache_dir()), args.videos, args.frames)
    dataset = VSPWDataset.from_root(root, "val")
    stream = FrameStream(dataset)
    count = len(stream)
    rng = np.random.default_rng(0)
    load_s, tensor_s, metric_s, row_s = [], [], [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        items = [stream.load(i) for i in range(count)]
        load_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        tensors = [as_tensors(item) for item in items]
        tensor_s.append(time.perf_counter() - started)
        predictions = []
        for item in tensors:  # a prediction that mostly agrees with the label, 5% of pixels redrawn
            label = item["label"].clone()
            label[label == 255] = 0
            noise = torch.from_numpy(rng.random(label.shape) < 0.05)
            label[noise] = torch.from_numpy(rng.integers(0, dataset.num_classes, int(noise.sum()), dtype=np.uint8))
            predictions.append(label)
        metrics = SegmentationMetrics(dataset.num_classes)
        started = time.perf_counter()
        for item, prediction in zip(tensors, predictions):
            metrics.update(prediction, item["label"])
            if item["is_last"]:
                metrics.end_video()
        metric_s.append(time.perf_counter() - started)
        rows = ResultFile(args.out.with_suffix(".rows.tmp.jsonl"))
        started = time.perf_counter()
        rows.put({"label": "harness", "config_hash": "harness", "status": "ok",
                  "metrics": metrics.summary(dataset.class_names)})
        row_s.append(time.perf_counter() - started)
        args.out.with_suffix(".rows.tmp.jsonl").unlink()
    loading = best(load_s) / count + best(tensor_s) / count
    per_frame = {"load (decode, resize, normalise, label)": best(load_s) / count,
                 "tensors": best(tensor_s) / count,
                 f"metrics (mIoU, WIoU, mVC8/16; {metrics.per_pixel_code} code)": best(metric_s) / count}
    total = sum(per_frame.values())
    fps, loading_fps = 1.0 / total, 1.0 / loading
    workers = math.ceil(GPUS * FASTEST_FPS / loading_fps)
    height, width = tensors[0]["label"].shape
    lines = [
        "# The harness at VSPW scale",
        "",
        f"Written by `python scripts/harness_scale.py` on {device_name('cpu')}, {os.cpu_count()} cores, torch {torch.__version__}, one thread; {count} frames of {width} x {height} "
        f"({args.videos} videos, a VSPW-layout set from the synthetic generator read as VSPW: "
        f"{dataset.num_classes} classes), best of {args.rounds} passes.",
        "",
        "| per frame | ms | frames/s |",
        "|---|---:|---:|",
        *[f"| {name} | {1000 * s:.2f} | {1 / s:.1f} |" for name, s in per_frame.items()],
        f"| loading alone (what a DataLoader worker does) | {1000 * loading:.2f} | {loading_fps:.1f} |",
        f"| **the whole harness on one core** | **{1000 * total:.2f}** | **{fps:.1f}** |",
        "",
        f"Writing a result row took {1000 * best(row_s):.2f} ms, once per row (a row scores a whole split).",
        "",
        f"TFC-B0, the fastest method of the papers vssbench reproduces, runs at {FASTEST_FPS} frames/s on one "
        f"V100 (TFC Table 1). On CUDA the frames are loaded by DataLoader workers (`--num-workers`, default 2 a "
        f"process) and the metrics accumulate on the GPU: one worker loads {loading_fps:.1f} frames/s, "
        f"{loading_fps / FASTEST_FPS:.2f} x that GPU's rate, so {GPUS} such GPUs ({GPUS * FASTEST_FPS:.0f} "
        f"frames/s) need {workers} loading worker{'s' if workers > 1 else ''} in all. On a CPU the whole harness, "
        f"metrics included, runs {fps:.1f} frames/s on one core ({fps / FASTEST_FPS:.2f} x).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    del native


if __name__ == "__main__":
    main()
