"""CamVid: 11 classes at 960x720, labelled frames inside 30 fps driving sequences.

Layout read here, the one ``BUAAHugeGun/DCFM`` (``datasets/camvid.py``) reads::

    <root>/<split>.txt                       label names, one per line (train, val, test)
    <root>/id2id.txt                         "<label name> <frame name>" per line (optional: without
                                             it a label's frame has the label's own name)
    <root>/gt/<label name>_L.png             class ids, one channel: 0..10, 11 = void
    <root>/<sequence>/<frame name>.png       the sequence's frames; <sequence> is the part of the
                                             label name before its first "_", and a frame name is
                                             "<prefix>_<number:06d>"

Each labelled frame is one clip of ``frames_before`` frames before it and ``frames_after`` after it
(default 1 and 1: DCFM's test, ``R: 1`` in ``exp/camvid/dcfm/*/infer.yaml``, reads frames n-1, n,
n+1); methods run over the clip and are scored on the labelled frame alone, so temporal consistency
is undefined (NaN), as on Cityscapes.

Labels: the 11 classes of SegNet's CamVid split (sky, building, pole, road, pavement, tree, sign,
fence, car, pedestrian, bicyclist); 11 (void) and any higher value are ignored, as DCFM's loader
maps ``>= 11`` to 255. A label with colour channels (the original CamVid ``_L.png`` colour coding)
is refused as every label reader refuses one (:func:`~vssbench.datasets.base.read_image`), where
DCFM's ``convert("L")`` would silently read its brightness as ids: convert it to ids first.

mIoU: DCFM (``metric/__init__.py``) accumulates one confusion matrix over the test frames and
divides the sum of the 11 IoUs by 11, a class with an empty union counting 0; that is
``--miou-mode all``, the default on this dataset. With every class in the test labels, as in the
233-frame test split, it equals the other modes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vssbench.datasets.base import (
    IGNORE_INDEX,
    DatasetError,
    FrameRecord,
    Video,
    VideoDataset,
    files_inside,
    read_split_list,
)

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")
CAMVID_VOID = 11
_FRAME_NAME = re.compile(r"^(?P<prefix>[^_/]+)_(?P<number>\d+)$")


@dataclass
class CamVidDataset(VideoDataset):
    name: str = "camvid"
    official_miou_mode: str = "all"
    frames_before: int = 1
    frames_after: int = 1

    @classmethod
    def from_root(cls, root: str | Path, split: str = "test", frames_before: int = 1,
                  frames_after: int = 1) -> CamVidDataset:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"data root {root} does not exist; expected a CamVid folder with gt/ and {split}.txt")
        if not (root / "gt").is_dir():
            raise DatasetError(f"{root / 'gt'} does not exist; expected the CamVid layout (gt/<label>_L.png, "
                               f"<sequence>/<frame>.png, {split}.txt) under {root}")
        names = read_split_list(root, split)
        frame_names = read_id_map(root / "id2id.txt")
        dataset = cls(root=root, split=split, num_classes=len(CAMVID_CLASSES), class_names=CAMVID_CLASSES,
                      frames_before=frames_before, frames_after=frames_after)
        dataset.videos = [clip(root, name, frame_names.get(name, name), frames_before, frames_after) for name in names]
        return dataset

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        label = raw.astype(np.uint8, copy=True)
        label[raw >= CAMVID_VOID] = IGNORE_INDEX
        return label


def read_id_map(path: Path) -> dict[str, str]:
    """``id2id.txt``: label name -> frame name; empty when the file is absent."""
    if not path.is_file():
        return {}
    mapping = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or any("/" in f or f in (".", "..") for f in fields):
            raise DatasetError(f"{path}, line {number}: {line.strip()!r}; expected '<label name> <frame name>'")
        mapping[fields[0]] = fields[1]
    return mapping


def clip(root: Path, label_name: str, frame_name: str, before: int, after: int) -> Video:
    """The frames ``before`` ahead of and ``after`` behind the labelled one, which alone carries the label."""
    match = _FRAME_NAME.match(frame_name)
    if match is None:
        raise DatasetError(f"frame name {frame_name!r} (of label {label_name}) is not '<sequence>_<number>'; "
                           "expected names such as 0001TP_008550 (id2id.txt maps label names to them)")
    label = root / "gt" / f"{label_name}_L.png"
    if not label.is_file():
        raise DatasetError(f"label {label} is missing; {label_name} is listed in the split list")
    sequence = root / label_name.split("_")[0]
    number = int(match["number"])
    if number - before < 0:
        raise DatasetError(f"label {label_name} is frame {number} of its sequence; its clip would start "
                           f"{before - number} frames before the sequence")
    frames = []
    for index in range(number - before, number + after + 1):
        path = sequence / f"{match['prefix']}_{index:06d}.png"
        if not path.is_file():
            raise DatasetError(f"label {label_name} needs frames {number - before}..{number + after} of "
                               f"{match['prefix']} in {sequence}; {path.name} is missing")
        frames.append(FrameRecord(path, label if index == number else None))
    files_inside(root, sequence, [f.image for f in frames])
    files_inside(root, root / "gt", [label])
    return Video(name=label_name, frames=tuple(frames))
