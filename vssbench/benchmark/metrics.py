"""Accuracy (mIoU, WIoU) and temporal consistency (mVC_n), accumulated frame by frame.

Semantics follow DESIGN.md section 5 exactly:

* A confusion matrix over all evaluated pixels, 255 ignored.
  IoU_c = TP / (TP + FP + FN). mIoU in ``vspw`` mode averages over classes that have
  ground-truth pixels; in ``mmseg`` mode over classes whose union is non-zero (so a
  class predicted but absent from the ground truth counts with IoU 0).
  WIoU = sum_c freq_c * IoU_c with freq_c the share of valid ground-truth pixels.
* VC_n, ``vspw`` protocol (VSPW's ``VC_perclip.py``, which produced the published
  numbers): a video with N labelled frames gives windows starting at 0..N-n-1 (N-n of
  them; the last possible window is not scored); in a window, G marks pixels whose
  ground truth equals frame i's in every later frame of the window, P the same for the
  predictions, and the score is |G and P| / |G|. Scores of all windows of all videos
  are pooled into one nan-safe mean. Videos with N <= 16 are skipped for both n.
  Ground truth is compared after the label shift, ignore pixels included.
* VC_n, ``paper`` protocol: the formula as printed, N-n+1 windows per video (videos
  with N < n have none), the mean per video, then the mean over videos.

The accumulators keep only a confusion matrix and, for VC, the last n label maps of
the current video; everything runs on the device the predictions live on.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import torch

from vssbench.datasets.base import IGNORE_INDEX

MiouMode = Literal["vspw", "mmseg"]
VcProtocol = Literal["vspw", "paper"]
MIOU_MODES = ("vspw", "mmseg")
VC_PROTOCOLS = ("vspw", "paper")
VSPW_MIN_VIDEO_LENGTH = 17  # VC_perclip.py skips videos with at most 16 labelled frames


class ConfusionMatrix:
    """A (C, C) matrix of ground truth (rows) against prediction (columns)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of integer maps of equal shape; target 255 is ignored."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        valid = target != IGNORE_INDEX
        target_valid = target[valid].to(torch.int64)
        if target_valid.numel() and int(target_valid.max()) >= self.num_classes:
            raise ValueError(f"target holds class {int(target_valid.max())} >= num_classes {self.num_classes}")
        index = target_valid * self.num_classes + prediction[valid].to(torch.int64)
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def iou(self) -> torch.Tensor:
        """Per-class IoU as float64; NaN where the union is empty."""
        matrix = self.matrix.double()
        tp = matrix.diag()
        union = matrix.sum(0) + matrix.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def miou(self, mode: MiouMode = "vspw") -> float:
        iou = self.iou()
        if mode == "vspw":
            keep = self.matrix.sum(1) > 0
        elif mode == "mmseg":
            keep = ~torch.isnan(iou)
        else:
            raise ValueError(f"unknown mIoU mode {mode!r}; expected one of {MIOU_MODES}")
        return float(iou[keep].mean()) if keep.any() else math.nan

    def wiou(self) -> float:
        gt_pixels = self.matrix.sum(1).double()
        if gt_pixels.sum() == 0:
            return math.nan
        freq = gt_pixels / gt_pixels.sum()
        return float((freq * torch.nan_to_num(self.iou(), nan=0.0)).sum())

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(self.matrix.diag().sum().double() / total) if total > 0 else math.nan


class VideoConsistency:
    """mVC_n over a stream of videos, one labelled frame at a time."""

    def __init__(self, window: int, protocol: VcProtocol = "vspw") -> None:
        if protocol not in VC_PROTOCOLS:
            raise ValueError(f"unknown VC protocol {protocol!r}; expected one of {VC_PROTOCOLS}")
        if window < 2:
            raise ValueError(f"VC window must be at least 2 frames, got {window}")
        self.window = window
        self.protocol = protocol
        self._targets: deque[torch.Tensor] = deque(maxlen=window)
        self._predictions: deque[torch.Tensor] = deque(maxlen=window)
        self._video_scores: list[float] = []
        self._frames_in_video = 0
        self.score_sum = 0.0  # vspw: sum of window scores; paper: sum of per-video means
        self.score_count = 0  # vspw: number of scored windows; paper: number of scored videos

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add the next labelled frame (H, W) of the current video."""
        self._targets.append(target)
        self._predictions.append(prediction)
        self._frames_in_video += 1
        if len(self._targets) == self.window:
            self._video_scores.append(self._window_score())

    def _window_score(self) -> float:
        targets = torch.stack(tuple(self._targets))
        predictions = torch.stack(tuple(self._predictions))
        stable_target = (targets[1:] == targets[0]).all(0)
        stable_prediction = (predictions[1:] == predictions[0]).all(0)
        denominator = int(stable_target.sum())
        return int((stable_target & stable_prediction).sum()) / denominator if denominator else math.nan

    def end_video(self) -> None:
        """Close the current video: fold its window scores into the totals."""
        scores, length = self._video_scores, self._frames_in_video
        if self.protocol == "vspw":
            if length >= VSPW_MIN_VIDEO_LENGTH:
                counted = [s for s in scores[: length - self.window] if not math.isnan(s)]
                self.score_sum += sum(counted)
                self.score_count += len(counted)
        else:
            counted = [s for s in scores if not math.isnan(s)]
            if counted:
                self.score_sum += sum(counted) / len(counted)
                self.score_count += 1
        self._targets.clear()
        self._predictions.clear()
        self._video_scores = []
        self._frames_in_video = 0

    def value(self) -> float:
        """mVC_n as a fraction in [0, 1]; NaN when no window was scored."""
        return self.score_sum / self.score_count if self.score_count else math.nan


class SegmentationMetrics:
    """The confusion matrix and the VC accumulators behind one result row."""

    def __init__(
        self,
        num_classes: int,
        device: torch.device | str = "cpu",
        miou_mode: MiouMode = "vspw",
        vc_protocol: VcProtocol = "vspw",
        vc_windows: tuple[int, ...] = (8, 16),
    ) -> None:
        if miou_mode not in MIOU_MODES:
            raise ValueError(f"unknown mIoU mode {miou_mode!r}; expected one of {MIOU_MODES}")
        self.miou_mode = miou_mode
        self.vc_protocol = vc_protocol
        self.confusion = ConfusionMatrix(num_classes, device)
        self.consistency = {n: VideoConsistency(n, vc_protocol) for n in vc_windows}
        self.frames = 0
        self.videos = 0

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add one labelled frame of the current video: integer maps (H, W)."""
        self.confusion.update(prediction, target)
        for accumulator in self.consistency.values():
            accumulator.update(prediction, target)
        self.frames += 1

    def end_video(self) -> None:
        for accumulator in self.consistency.values():
            accumulator.end_video()
        self.videos += 1

    def summary(self, class_names: tuple[str, ...]) -> dict:
        """The metrics block of a result row, in percent (0-100) as the papers print them."""
        iou = self.confusion.iou()
        return {
            "miou": _percent(self.confusion.miou(self.miou_mode)),
            "wiou": _percent(self.confusion.wiou()),
            **{f"mvc{n}": _percent(acc.value()) for n, acc in self.consistency.items()},
            "pixel_accuracy": _percent(self.confusion.pixel_accuracy()),
            "miou_mode": self.miou_mode,
            "vc_protocol": self.vc_protocol,
            "per_class_iou": {name: _percent(float(v)) for name, v in zip(class_names, iou)},
            "frames_evaluated": self.frames,
            "videos": self.videos,
        }


def _percent(value: float) -> float | None:
    """A fraction as a percentage rounded to 4 decimals; NaN becomes None (JSON null)."""
    return None if math.isnan(value) else round(100.0 * value, 4)
