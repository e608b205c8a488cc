"""Cityscapes video snippets: 30 frames each, the 20th of which carries a fine label.

Layout read here::

    <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame:06d>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame:06d>_gtFine_labelTrainIds.png   (or _labelIds.png)

A snippet is the 30 consecutive frames ending 10 frames after the labelled one
(the labelled frame is the 20th, index 19); with ``clip_radius`` R it is the 2R + 1
frames centred on the labelled one instead (DCFM's test reads R = 1, its ``R``).
Methods run over the whole snippet and are scored on the labelled frame only; temporal consistency is therefore undefined
on Cityscapes and reported as NaN. Key frames are the runner's concern: its schedule
puts them at 0, k, 2k, ... of the snippet, so the labelled frame lies 19 mod k frames
after its key frame; a rotating schedule with ``bench run --cycles`` (DCFM's test)
scores it at other offsets too.

Labels: ``labelTrainIds`` (0..18, 255) are used as they are; ``labelIds`` are mapped
to train ids with the official table. Frames are evaluated at full 1024x2048 unless
``short_side`` is set (``--resize short:N``); labels are scored at full size.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
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
)

log = logging.getLogger("vssbench")

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
SNIPPET_LENGTH = 30
LABELLED_INDEX = 19  # the 20th frame of each snippet

# Official labelId -> trainId table (cityscapesScripts labels.py); everything else is ignored.
_LABEL_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                         25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
_FRAME_NAME = re.compile(r"^(?P<city>[a-z_]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")
_LABEL_NAME = re.compile(r"^(?P<city>[a-z_]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_label(?:Train)?Ids\.png$")


@dataclass
class CityscapesDataset(VideoDataset):
    name: str = "cityscapes"
    # cityscapesscripts (evalPixelLevelSemanticLabeling.getScoreAverage) averages the IoU of the classes
    # whose union is non-empty: a class absent from both the labels and the predictions is NaN and left
    # out. That is the ``mmseg`` mode; VSPW's mode (classes with ground-truth pixels) differs whenever a
    # class is predicted but absent from the labels. tests/test_cityscapes_eval.py runs the script itself.
    official_miou_mode: str = "mmseg"
    clip_radius: int | None = None  # None: the 30-frame snippet; R: the labelled frame and R on either side

    @classmethod
    def from_root(cls, root: str | Path, split: str = "val", max_videos: int | None = None,
                  clip_radius: int | None = None) -> "CityscapesDataset":
        root = Path(root)
        sequence_dir = root / "leftImg8bit_sequence" / split
        label_dir = root / "gtFine" / split
        for folder in (sequence_dir, label_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder} does not exist; expected the Cityscapes layout under {root}")
        videos = scan_snippets(sequence_dir, label_dir, clip_radius)[:max_videos]
        if not videos:
            raise DatasetError(f"no labelled snippets found under {sequence_dir}")
        dataset = cls(root=root, split=split, num_classes=len(CITYSCAPES_CLASSES), class_names=CITYSCAPES_CLASSES,
                      clip_radius=clip_radius)
        dataset.videos = videos
        return dataset

    def selection(self) -> dict:
        """The base selection, plus ``clip_radius`` when clips are not the 30-frame snippets (only then, so
        that the rows of snippet runs keep their hashes): the same labels in other clips are other videos."""
        selection = super().selection()
        return selection if self.clip_radius is None else {**selection, "clip_radius": self.clip_radius}

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if path.name.endswith("_labelTrainIds.png"):
            check_label_values(raw, self.num_classes - 1, path)
            return raw.astype(np.uint8)
        lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for label_id, train_id in _LABEL_ID_TO_TRAIN_ID.items():
            lookup[label_id] = train_id
        return lookup[raw]


def scan_snippets(sequence_dir: Path, label_dir: Path, clip_radius: int | None = None) -> list[Video]:
    """One snippet per fine label: the 30 frames around it (or the ``clip_radius`` frames either side of
    it), in order.

    Files whose names do not follow Cityscapes' ``<city>_<seq>_<frame>_...`` pattern (a copy, an
    ``extra_...`` file) are skipped with a warning naming them, as cityscapesscripts ignores what its
    glob does not match. A label whose snippet would start before the sequence's first frame, or a
    missing frame, is bad input, and so is a city folder or file whose links lead out of its split folder."""
    for folder in (sequence_dir, label_dir):
        for city in (p for p in folder.iterdir() if p.is_dir()):
            files_inside(folder, city, list(city.iterdir()))
    frames_by_sequence: dict[tuple[str, str], dict[int, Path]] = defaultdict(dict)
    stray = []
    for path in sorted(sequence_dir.glob("*/*_leftImg8bit.png")):
        match = _FRAME_NAME.match(path.name)
        if match:
            frames_by_sequence[(match["city"], match["seq"])][int(match["frame"])] = path
        else:
            stray.append(path)
    videos = []
    for label_path in sorted(label_dir.glob("*/*_gtFine_label*Ids.png")):
        match = _LABEL_NAME.match(label_path.name)
        if match is None:
            stray.append(label_path)
            continue
        if label_path.name.endswith("_labelIds.png") and label_path.with_name(
            label_path.name.replace("_labelIds", "_labelTrainIds")
        ).exists():
            continue
        city, seq, labelled = match["city"], match["seq"], int(match["frame"])
        before, after = (LABELLED_INDEX, SNIPPET_LENGTH - LABELLED_INDEX - 1) if clip_radius is None else (
            clip_radius, clip_radius)
        if labelled < before:
            raise DatasetError(f"label {label_path} is frame {labelled} of {city}_{seq}: its snippet would start "
                               f"{before - labelled} frames before the sequence; expected a labelled frame "
                               f"at index {before} or later ({before} frames before it in its clip)")
        available = frames_by_sequence.get((city, seq), {})
        wanted = range(labelled - before, labelled + after + 1)
        missing = [f for f in wanted if f not in available]
        if missing:
            raise DatasetError(
                f"label {label_path} needs frames {wanted.start}..{wanted.stop - 1} of {city}_{seq} in "
                f"{sequence_dir / city}; frame {missing[0]:06d} is missing"
            )
        frames = tuple(FrameRecord(available[f], label_path if f == labelled else None) for f in wanted)
        videos.append(Video(name=f"{city}_{seq}_{labelled:06d}", frames=frames))
    if stray:
        log.warning("skipped %d file(s) not named <city>_<seq>_<frame>_... under %s: %s", len(stray),
                    sequence_dir.parent.parent, ", ".join(str(p) for p in stray[:3]) + (", ..." if len(stray) > 3 else ""))
    return videos
