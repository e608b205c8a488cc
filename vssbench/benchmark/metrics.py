"""Accuracy (mIoU, WIoU) and temporal consistency (mVC_n), accumulated frame by frame.

Semantics (docs/metrics.md):

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

The accumulators keep only a confusion matrix and, for VC, the previous frame and each
pixel's frames-since-last-change; everything runs on the device the predictions live on.
On a CPU, uint8 maps of at most 255 classes go through the C kernels of ``native.py``,
which count exactly what the torch code counts in about half the time.
"""

from __future__ import annotations

import ctypes
import math
from typing import Literal

import torch

from vssbench.benchmark import native
from vssbench.datasets.base import IGNORE_INDEX

MiouMode = Literal["vspw", "mmseg", "all"]
VcProtocol = Literal["vspw", "paper"]
MIOU_MODES = ("vspw", "mmseg", "all")
VC_PROTOCOLS = ("vspw", "paper")
VSPW_MIN_VIDEO_LENGTH = 17  # VC_perclip.py skips videos with at most 16 labelled frames


class ConfusionMatrix:
    """A (C, C) matrix of ground truth (rows) against prediction (columns)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        # One joint index per pixel, target * C + prediction. The ignore value 255 indexes at
        # 255 * C and above, past the C x C block, so no masking pass is needed. int16 halves
        # the memory traffic of int32 whenever 256 * C fits.
        self._index_dtype = torch.int16 if 256 * num_classes <= 2**15 else torch.int32
        self._index: torch.Tensor | None = None  # reused across frames: no allocation per frame
        self._lanes: torch.Tensor | None = None  # the C kernel's zeroed sub-histograms
        self.codes_used: set[str] = set()  # "c" and/or "torch": which code counted, for the row's record

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add integer maps of equal shape: predictions in 0..C-1, targets in 0..C-1 or 255 (ignored)."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        on_cpu_as_bytes = _native_applies(prediction, target) and self.matrix.device.type == "cpu"
        kernels = native.kernels() if on_cpu_as_bytes and self.num_classes <= IGNORE_INDEX else None
        if kernels is not None:
            self._update_native(kernels, prediction.contiguous(), target.contiguous())
        else:
            self._update_torch(prediction, target)
        self.codes_used.add("c" if kernels is not None else "torch")

    def _update_native(self, kernels: ctypes.CDLL, prediction: torch.Tensor, target: torch.Tensor) -> None:
        classes = self.num_classes
        if self._lanes is None:
            self._lanes = torch.zeros(kernels.vss_confusion_lanes() * classes * classes, dtype=torch.int32)
        outcome = kernels.vss_confusion_update(target.data_ptr(), prediction.data_ptr(), target.numel(), classes,
                                               self.matrix.data_ptr(), self._lanes.data_ptr())
        if outcome == 1:
            raise ValueError(f"target holds a class >= num_classes {classes} other than {IGNORE_INDEX}")
        if outcome == 2:
            raise ValueError(f"prediction holds a class >= num_classes {classes}")

    def _update_torch(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        classes = self.num_classes
        if int(prediction.max()) >= classes:
            raise ValueError(f"prediction holds a class >= num_classes {classes}")
        if self._index is None or self._index.numel() != target.numel() or self._index.device != target.device:
            self._index = torch.empty(target.numel(), dtype=self._index_dtype, device=target.device)
        index = self._index
        index.copy_(target.reshape(-1)).mul_(classes).add_(prediction.reshape(-1))
        counts = torch.bincount(index, minlength=classes * classes)
        # A target in C..254 lands between the C x C block and the ignore block.
        if counts.numel() > classes * classes and counts[classes * classes: IGNORE_INDEX * classes].any():
            raise ValueError(f"target holds a class >= num_classes {classes} other than {IGNORE_INDEX}")
        self.matrix += counts[: classes * classes].view(classes, classes)

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
        elif mode == "all":  # DCFM's CamVid mIoU: every class, one with an empty union counting 0
            return float(torch.nan_to_num(iou, nan=0.0).mean())
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
    """mVC_n for several window lengths over a stream of videos, one labelled frame at a time.

    A window of frames i..i+n-1 is stable at a pixel iff the value never changes between
    consecutive frames inside it (equal to frame i in every later frame is the same thing).
    So instead of keeping n frames, each pixel's age (frames since its last change, capped
    at the longest window) is tracked for the ground truth (G) and for "ground truth or
    prediction" (G and P): the window ending at the current frame is stable iff age >= n-1.
    One pass per frame serves every window length; the work buffers are allocated once per
    frame size, because on CPUs fresh allocations of frame-sized tensors cost more than
    the arithmetic.
    """

    def __init__(self, windows: tuple[int, ...] = (8, 16), protocol: VcProtocol = "vspw") -> None:
        if protocol not in VC_PROTOCOLS:
            raise ValueError(f"unknown VC protocol {protocol!r}; expected one of {VC_PROTOCOLS}")
        if any(n < 2 or n > 256 for n in windows):
            raise ValueError(f"VC windows must be 2 to 256 frames, got {windows}")
        self.windows = tuple(windows)
        self.protocol = protocol
        self.score_sum = {n: 0.0 for n in windows}  # vspw: sum of window scores; paper: sum of per-video means
        self.score_count = {n: 0 for n in windows}  # vspw: scored windows; paper: scored videos
        # Each closed video's (sum, count) per window, in order: processes that evaluated different
        # videos merge these in the single-process order, so that the float sums are bit-identical.
        self.per_video: list[tuple[dict[int, float], dict[int, int]]] = []
        self._age_cap = max(windows) - 1  # uint8 ages never overflow
        self._buffers: dict[str, torch.Tensor] = {}
        self._thresholds: dict[int, torch.Tensor] = {}
        # The C kernel's inputs and outputs: n - 1 per window, then (stable in G, in G and P) per window.
        self._native_thresholds = torch.tensor([n - 1 for n in self.windows], dtype=torch.uint8)
        self._native_stable = torch.zeros(2 * len(self.windows), dtype=torch.int64)
        self.codes_used: set[str] = set()  # as ConfusionMatrix.codes_used
        self._start_video()

    def _start_video(self) -> None:
        self._frames_in_video = 0
        self._video_scores: dict[int, list[float]] = {n: [] for n in self.windows}

    def _allocate(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        kinds = {"previous_target": target.dtype, "previous_prediction": prediction.dtype, "age_target": torch.uint8,
                 "age_both": torch.uint8, "same_target": torch.bool, "same_both": torch.bool, "stable": torch.bool}
        reusable = self._buffers and all(
            self._buffers[name].dtype == dtype and self._buffers[name].shape == target.shape
            and self._buffers[name].device == target.device for name, dtype in kinds.items())
        if not reusable:
            self._buffers = {name: torch.empty(target.shape, dtype=dtype, device=target.device)
                             for name, dtype in kinds.items()}
            # Comparisons against a full tensor take the vectorised kernels; a scalar does not (on CPUs).
            self._thresholds = {n: torch.full(target.shape, n - 1, dtype=torch.uint8, device=target.device)
                                for n in self.windows}
        return self._buffers

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add the next labelled frame (H, W) of the current video."""
        t = self._frames_in_video
        if t > 0 and self._buffers["age_target"].shape != target.shape:
            raise ValueError(f"frame {t} of a video has size {tuple(target.shape)}, the frames before "
                             f"{tuple(self._buffers['age_target'].shape)}; VC needs one size per video")
        buffers = self._allocate(prediction, target)
        if t == 0:
            buffers["age_target"].zero_()
            buffers["age_both"].zero_()
            buffers["previous_target"].copy_(target)
            buffers["previous_prediction"].copy_(prediction)
        else:
            scored = [n for n in self.windows if t >= n - 1]
            kernels = native.kernels() if _native_applies(prediction, target) else None
            if kernels is not None:
                stable = self._advance_native(kernels, prediction.contiguous(), target.contiguous(), buffers)
            else:
                stable = self._advance_torch(prediction, target, buffers, scored)
            self.codes_used.add("c" if kernels is not None else "torch")
            for n in scored:
                denominator, stable_both = stable[n]
                self._video_scores[n].append(stable_both / denominator if denominator else math.nan)
        self._frames_in_video += 1

    def _advance_torch(self, prediction: torch.Tensor, target: torch.Tensor, buffers: dict[str, torch.Tensor],
                       windows: list[int]) -> dict[int, tuple[int, int]]:
        """Age every pixel by one frame; (pixels stable in G, in G and P) of each window ending here."""
        previous_target, previous_prediction = buffers["previous_target"], buffers["previous_prediction"]
        age_target, age_both = buffers["age_target"], buffers["age_both"]
        same_target, same_both = buffers["same_target"], buffers["same_both"]
        torch.eq(target, previous_target, out=same_target)
        torch.eq(prediction, previous_prediction, out=same_both)
        same_both &= same_target
        # age <- min(age + 1, cap) where unchanged, 0 where changed. The masks multiply as
        # their uint8 views (bool storage is one 0/1 byte): a bool operand would be converted.
        age_target.add_(1).clamp_(max=self._age_cap).mul_(same_target.view(torch.uint8))
        age_both.add_(1).clamp_(max=self._age_cap).mul_(same_both.view(torch.uint8))
        previous_target.copy_(target)
        previous_prediction.copy_(prediction)
        stable = buffers["stable"]
        return {n: (int(torch.ge(age_target, self._thresholds[n], out=stable).sum(dtype=torch.int32)),
                    int(torch.ge(age_both, self._thresholds[n], out=stable).sum(dtype=torch.int32)))
                for n in windows}

    def _advance_native(self, kernels: ctypes.CDLL, prediction: torch.Tensor, target: torch.Tensor,
                        buffers: dict[str, torch.Tensor]) -> dict[int, tuple[int, int]]:
        """As ``_advance_torch``, in one pass of the C kernel, for every window."""
        thresholds, stable = self._native_thresholds, self._native_stable
        kernels.vss_consistency_update(
            target.data_ptr(), prediction.data_ptr(), buffers["previous_target"].data_ptr(),
            buffers["previous_prediction"].data_ptr(), buffers["age_target"].data_ptr(),
            buffers["age_both"].data_ptr(), target.numel(), self._age_cap, thresholds.data_ptr(),
            len(self.windows), stable.data_ptr())
        counts = stable.tolist()
        return {n: (counts[2 * i], counts[2 * i + 1]) for i, n in enumerate(self.windows)}

    def end_video(self) -> None:
        """Close the current video: fold its window scores into the totals."""
        length = self._frames_in_video
        sums, counts = {n: 0.0 for n in self.windows}, {n: 0 for n in self.windows}
        for n, scores in self._video_scores.items():
            if self.protocol == "vspw":
                if length >= VSPW_MIN_VIDEO_LENGTH:
                    counted = [s for s in scores[: length - n] if not math.isnan(s)]
                    sums[n], counts[n] = sum(counted), len(counted)
            else:
                counted = [s for s in scores if not math.isnan(s)]
                if counted:
                    sums[n], counts[n] = sum(counted) / len(counted), 1
        self.add_video(sums, counts)
        self._start_video()

    def add_video(self, sums: dict[int, float], counts: dict[int, int]) -> None:
        """Fold one closed video's window-score sum and count per window length into the totals."""
        for n in self.windows:
            self.score_sum[n] += sums[n]
            self.score_count[n] += counts[n]
        self.per_video.append((sums, counts))

    def value(self, window: int) -> float:
        """mVC_n as a fraction in [0, 1]; NaN when no window was scored."""
        return self.score_sum[window] / self.score_count[window] if self.score_count[window] else math.nan


def _native_applies(prediction: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether the C kernels take these maps: uint8, on a CPU."""
    return prediction.device.type == target.device.type == "cpu" and prediction.dtype == target.dtype == torch.uint8


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
        self.consistency = VideoConsistency(vc_windows, vc_protocol)
        self.frames = 0
        self.videos = 0

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add one labelled frame of the current video: integer maps (H, W)."""
        self.confusion.update(prediction, target)
        self.consistency.update(prediction, target)
        self.frames += 1

    def end_video(self) -> None:
        self.consistency.end_video()
        self.videos += 1

    def state(self) -> dict:
        """What merging needs: the confusion matrix, per-video VC contributions and counts."""
        return {"confusion": self.confusion.matrix.cpu(), "per_video": list(self.consistency.per_video),
                "frames": self.frames, "per_pixel_code": self.per_pixel_code}

    @property
    def per_pixel_code(self) -> str | None:
        """Which code did the per-pixel counting: "c" (the kernels of ``native.py``), "torch", or
        "c+torch" when both ran; None before any frame. The counts are identical either way (tested);
        only the harness's share of the pass's wall time differs, which is why rows record it."""
        codes = self.confusion.codes_used | self.consistency.codes_used
        return "+".join(sorted(codes)) or None

    @classmethod
    def merged(cls, states: list[dict], video_order: list[list[int]], like: SegmentationMetrics) -> SegmentationMetrics:
        """Metrics of several disjoint shards of videos, as one process evaluating all of them in
        order would give: ``video_order[i]`` holds the global index of each video of shard i."""
        merged = cls(like.confusion.num_classes, like.confusion.matrix.device, like.miou_mode, like.vc_protocol,
                     like.consistency.windows)
        for state in states:
            merged.confusion.matrix += state["confusion"].to(merged.confusion.matrix.device)
            merged.frames += state["frames"]
            if state["per_pixel_code"]:
                merged.confusion.codes_used.update(state["per_pixel_code"].split("+"))
        videos = sorted(((index, record) for state, indices in zip(states, video_order)
                         for index, record in zip(indices, state["per_video"])), key=lambda item: item[0])
        for _, (sums, counts) in videos:
            merged.consistency.add_video(sums, counts)
        merged.videos = len(videos)
        return merged

    def summary(self, class_names: tuple[str, ...]) -> dict:
        """The metrics block of a result row, in percent (0-100) as the papers print them."""
        iou = self.confusion.iou()
        return {
            "miou": _percent(self.confusion.miou(self.miou_mode)),
            "wiou": _percent(self.confusion.wiou()),
            **{f"mvc{n}": _percent(self.consistency.value(n)) for n in self.consistency.windows},
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
