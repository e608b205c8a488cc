"""VSPW (Miao et al., CVPR 2021): 3,536 videos, 124 classes, dense annotation at 15 fps.

Layout read here (``VSPW`` and ``VSPW_480p`` alike)::

    <root>/train.txt, val.txt, test.txt      one video name per line
    <root>/data/<video>/origin/<stem>.jpg    frames
    <root>/data/<video>/mask/<stem>.png      labels: 0 = "others", 1..124 classes, 255 = void

Labels are shifted as in the papers' evaluation code: 0 and 255 become 255 (ignored),
c becomes c - 1, giving train ids 0..123.

Resizing: frames are resized keeping their aspect ratio into (480, 853), mmseg's
``Resize(scale=(853, 480), keep_ratio=True)`` that MPVSS, TFC and CFFM use at test time
(VSPW_480p frames are already that size and pass through unchanged). Labels stay at
their own resolution; the runner upsamples logits to it before scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vssbench.datasets.base import (
    IGNORE_INDEX,
    DatasetError,
    FrameRecord,
    Video,
    VideoDataset,
    check_label_values,
    files_inside,
    read_split_list,
)
from vssbench.datasets.transforms import keep_ratio_size

VSPW_NUM_CLASSES = 124
VSPW_SCALE = (480, 853)
LABELLED_SPLITS = ("train", "val")


@dataclass
class VSPWDataset(VideoDataset):
    """A split of a VSPW-layout root. ``num_classes`` is 124 for VSPW itself."""

    name: str = "vspw"
    keep_ratio_scale: tuple[int, int] | None = VSPW_SCALE

    @classmethod
    def from_root(
        cls,
        root: str | Path,
        split: str = "val",
        num_classes: int = VSPW_NUM_CLASSES,
        class_names: tuple[str, ...] | None = None,
        keep_ratio_scale: tuple[int, int] | None = VSPW_SCALE,
        max_videos: int | None = None,
    ) -> "VSPWDataset":
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"data root {root} does not exist; expected a VSPW folder with data/ and {split}.txt")
        names = read_split_list(root, split)[:max_videos]
        videos = [scan_video(root, name, require_masks=split in LABELLED_SPLITS) for name in names]
        dataset = cls(
            root=root,
            split=split,
            num_classes=num_classes,
            class_names=class_names or tuple(f"class_{i}" for i in range(num_classes)),
            keep_ratio_scale=keep_ratio_scale,
        )
        dataset.videos = videos
        return dataset

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        if self.keep_ratio_scale is None or self.short_side is not None:
            return super().target_size(height, width)
        return keep_ratio_size(height, width, self.keep_ratio_scale)

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        check_label_values(raw, self.num_classes, path)
        # The label shift of the VSPW evaluation: 0 ("others") and 255 -> ignore, c -> c - 1.
        label = raw.astype(np.int16) - 1
        label[(raw == 0) | (raw == IGNORE_INDEX)] = IGNORE_INDEX
        return label.astype(np.uint8)


def scan_video(root: Path, name: str, require_masks: bool) -> Video:
    """List a video's frames, pairing each ``origin/<stem>.jpg`` with ``mask/<stem>.png``."""
    video_dir = root / "data" / name
    frame_dir, mask_dir = video_dir / "origin", video_dir / "mask"
    if not frame_dir.is_dir():
        raise DatasetError(f"video '{name}' is listed but {frame_dir} does not exist; expected its frames there")
    images = sorted(p for p in frame_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise DatasetError(f"{frame_dir} holds no frames; expected <stem>.jpg files")
    masks = {p.stem: p for p in mask_dir.glob("*.png")} if mask_dir.is_dir() else {}
    files_inside(root, frame_dir, images)
    if masks:
        files_inside(root, mask_dir, list(masks.values()))
    if require_masks:
        missing = [p for p in images if p.stem not in masks]
        if missing:
            raise DatasetError(
                f"frame {missing[0]} has no mask {mask_dir / (missing[0].stem + '.png')} "
                f"({len(missing)} of {len(images)} frames of '{name}' lack one); every frame of a labelled split needs one"
            )
        extra = sorted(set(masks) - {p.stem for p in images})
        if extra:
            raise DatasetError(
                f"mask {masks[extra[0]]} has no frame in {frame_dir} ({len(extra)} masks without frames); "
                "expected one mask per frame"
            )
    return Video(name=name, frames=tuple(FrameRecord(image=p, mask=masks.get(p.stem)) for p in images))
