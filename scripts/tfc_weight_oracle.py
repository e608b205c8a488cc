"""How much can TFC's interpolation weight w_t gain on a dataset? An oracle experiment.

Runs a trained ``tfc`` checkpoint over a split at key-frame interval k and scores its
non-key path with w_t replaced by:

* ``learned``: the method as trained (Eq. 5-7, plus the refinement if the variant has it);
* ``current`` (w = 0): z_t of the current frame's levels 1-2 with the key frame's levels 3-4,
  i.e. the ``feature-reuse`` path with this model's weights;
* ``key`` (w = 1): z_k everywhere, i.e. the key prediction copied;
* ``oracle``: w = 1 exactly where the ground-truth labels of the key and the current
  frame agree (Eq. 12's target), 0 elsewhere;
* ``oracle-eroded-r``: the oracle with its agreeing region eroded by r points at 1/4
  resolution, so that key features are used only away from any label change.

The oracle rows are interpolation without refinement. If ``current`` beats every
``oracle`` row, taking the key frame's features even exactly where the labels agree
costs accuracy on that data, so a better-learned w_t would not help either. Key frames are
scored too, identically in every row, so the numbers compare with ``bench run``'s.

It also reports how the learned similarity separates the two cases the oracle knows:
its mean (clamped to [0, 1], as Eq. 7 uses it) over points whose label stayed and over
points whose label changed, and the share of changed points below the default
variant's refinement threshold.

    python scripts/tfc_weight_oracle.py CHECKPOINT [--interval 4] [--data-root DIR] [--split val] [--max-videos N]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from vssbench.benchmark.metrics import SegmentationMetrics
from vssbench.datasets.base import FrameStream, VideoDataset
from vssbench.datasets.synthetic import SyntheticSpec, ensure_generated, load_synthetic
from vssbench.methods.base import build_method
from vssbench.methods.tfc import (
    KEY_STAGES,
    TFC,
    KeyFrameState,
    cosine_similarity_map,
    label_consistency,
    unit_features,
)
from vssbench.methods.weights import load_weights, read_source
from vssbench.progress import Progress

EROSION_RADII = (2, 4)
REFINE_THRESHOLD = 0.8  # the default variant, sparse-msda-0.8
ROWS = ("learned", "current", "key", "oracle", *(f"oracle-eroded-{r}" for r in EROSION_RADII))


def interpolated_logits(method: TFC, key: KeyFrameState, current: list[torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """Eq. 7 with a given weight map on the fused features z_k and z_t, then the classifier; no refinement."""
    fused = method.finish_fuse(method.fuse_terms(current, 0, current[0].shape[-2:]) + key.reused_fuse_terms)
    return method.head.classifier(weight * key.fused + (1.0 - weight) * fused)


class SimilarityByLabelChange:
    """Clamped w_t summed over non-key points whose label stayed, and over points whose label
    changed (void excluded), at the 1/4 resolution where Eq. 12 compares them."""

    def __init__(self) -> None:
        self.stayed_sum = self.changed_sum = 0.0
        self.stayed = self.changed = self.changed_below_threshold = 0

    def update(self, similarity: torch.Tensor, same: torch.Tensor, valid: torch.Tensor) -> None:
        weight = similarity[:, 0].clamp(0.0, 1.0)
        stayed, changed = weight[same & valid], weight[~same & valid]
        self.stayed_sum += float(stayed.sum())
        self.changed_sum += float(changed.sum())
        self.stayed += stayed.numel()
        self.changed += changed.numel()
        self.changed_below_threshold += int((changed < REFINE_THRESHOLD).sum())

    def summary(self) -> str:
        if not (self.stayed and self.changed):
            return "learned w_t: no non-key point with both cases"
        return (f"learned w_t: mean {self.stayed_sum / self.stayed:.2f} where the label stayed, "
                f"{self.changed_sum / self.changed:.2f} where it changed; "
                f"{100 * self.changed_below_threshold / self.changed:.0f}% of changed points below {REFINE_THRESHOLD}")


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of a (1, 1, h, w) 0/1 map with a square of side 2 * radius + 1."""
    return -F.max_pool2d(-mask, 2 * radius + 1, stride=1, padding=radius)


@torch.inference_mode()
def oracle_metrics(method: TFC, dataset: VideoDataset, interval: int) -> tuple[dict[str, dict], SimilarityByLabelChange]:
    """Each row's metrics summary (``SegmentationMetrics.summary``) over ``dataset`` at interval k,
    and the learned similarity by label change."""
    method.eval()
    metrics = {row: SegmentationMetrics(dataset.num_classes) for row in ROWS}
    similarity_stats = SimilarityByLabelChange()
    stream = FrameStream(dataset)
    progress = Progress(len(stream), f"{method.spec} ({method.variant}) k={interval}", unit="frame")
    for index in progress.track(range(len(stream))):
        item = stream[index]
        frame, label = item["image"][None], item["label"].long()
        if item["frame_index"] % interval == 0:
            logits, key = method.key_forward(frame)
            key_label = label
            predictions = {row: logits for row in ROWS}
        else:
            current = method.project_levels(method.segmentor.extract_stages(frame, KEY_STAGES))
            size = current[0].shape[-2:]
            similarity = cosine_similarity_map(key.unit_level2, unit_features(current[1], size))
            same, valid = label_consistency(key_label[None], label[None], size)
            similarity_stats.update(similarity, same, valid)
            agreement = (same & valid).float()[:, None]  # Eq. 12's target, void counted as changed
            weights = {"current": torch.zeros_like(similarity), "key": torch.ones_like(similarity),
                       "oracle": agreement, **{f"oracle-eroded-{r}": erode(agreement, r) for r in EROSION_RADII}}
            predictions = {"learned": method.nonkey_forward(frame, key)[0],
                           **{row: interpolated_logits(method, key, current, w) for row, w in weights.items()}}
        for row, logits in predictions.items():
            scores = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
            metrics[row].update(scores.argmax(1)[0], label)
            if item["is_last"]:
                metrics[row].end_video()
    return {row: metrics[row].summary(dataset.class_names) for row in ROWS}, similarity_stats


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # progress lines in a log
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a tfc checkpoint (e.g. from the bench run cache)")
    parser.add_argument("--interval", type=int, default=4, help="key-frame interval k (default: 4, TFC's)")
    parser.add_argument("--data-root", type=Path,
                        help="a synthetic dataset written by `bench data synthetic` (default: the cached default set)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-videos", type=int, help="use only the first N videos of the split")
    args = parser.parse_args(argv)
    dataset = load_synthetic(args.data_root or ensure_generated(SyntheticSpec()), args.split)
    dataset.videos = dataset.videos[: args.max_videos]
    payload = read_source(args.checkpoint).payload or {}
    method = build_method(f"tfc:{payload.get('preset', 'tiny')}", dataset.num_classes, variant=payload.get("variant"))
    load_weights(method, args.checkpoint)
    summaries, similarity_stats = oracle_metrics(method, dataset, args.interval)
    print(f"{method.spec} ({method.variant}), k = {args.interval}, {dataset.name}/{args.split}")
    print(f"  {'w_t':18s} {'mIoU':>6s} {'mVC8':>6s} {'mVC16':>6s}")
    for row, summary in summaries.items():
        values = " ".join("     -" if summary[m] is None else f"{summary[m]:6.2f}" for m in ("miou", "mvc8", "mvc16"))
        print(f"  {row:18s} {values}")
    print(f"  {similarity_stats.summary()}")


if __name__ == "__main__":
    main()
