"""Video datasets as lists of videos, and a frame stream that feeds the runner in order.

Every dataset resolves to the same in-memory description: a list of :class:`Video`
records whose frames carry an image path and, where labelled, a mask path. Reading
and validating pixels happens lazily in :class:`FrameStream`, inside DataLoader
workers, so that loading stays outside the timed region of the runner.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vssbench.datasets import DatasetError
from vssbench.datasets.transforms import normalize_image, resize_image, resize_label, short_side_size
from vssbench.limits import check_image_size, check_inside, plain_name

IGNORE_INDEX = 255


@dataclass(frozen=True)
class FrameRecord:
    image: Path
    mask: Path | None  # None: an unlabelled frame (Cityscapes sequences)

    @property
    def stem(self) -> str:
        return self.image.stem


@dataclass(frozen=True)
class Video:
    name: str
    frames: tuple[FrameRecord, ...]

    @property
    def num_labelled(self) -> int:
        return sum(frame.mask is not None for frame in self.frames)


@dataclass
class VideoDataset(abc.ABC):
    """A split of a video segmentation dataset.

    Subclasses fill ``videos`` and implement :meth:`decode_label`, the mapping from
    the label file's values to train ids 0..C-1 with 255 as ignore.
    """

    root: Path
    split: str
    num_classes: int
    class_names: tuple[str, ...]
    input_size: tuple[int, int] | None = None  # (H, W) the methods see; None keeps the frame size
    videos: list[Video] = field(default_factory=list)
    # (H, W) labels are resized to (nearest) and scored at, as DCFM's VSPW test does; None: their own size.
    label_size: tuple[int, int] | None = None
    # Frames resized so that their shorter side is this many pixels (torchvision's ``Resize(n)``, DCFM's
    # Cityscapes test), labels kept at their own size; None: ``input_size``'s rule.
    short_side: int | None = None

    name: str = "dataset"
    # How the dataset's official evaluation averages IoU over classes (metrics.MIOU_MODES): the default
    # of ``bench run --miou-mode`` on this dataset, recorded in every row.
    official_miou_mode: str = "vspw"

    @abc.abstractmethod
    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Map raw label values to 0..C-1 and 255 (ignore); raise DatasetError on bad values."""

    def selection(self) -> dict:
        """Which videos this dataset holds: their count and a digest of their names and labelled frames.

        Part of a row's configuration (a run restricted by ``--max-videos``, or on a split holding other
        videos, never resumes from, or is checked against, a row of other videos) and of a training record.
        """
        listing = "\n".join(f"{video.name}:{video.num_labelled}" for video in self.videos)
        return {"count": len(self.videos), "sha256": hashlib.sha256(listing.encode()).hexdigest()[:16]}

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) a frame of size (height, width) is resized to before the methods see it."""
        if self.short_side is not None:
            return short_side_size(height, width, self.short_side)
        return self.input_size if self.input_size is not None else (height, width)

    def load_image(self, path: Path) -> np.ndarray:
        """An RGB frame as uint8 (H, W, 3)."""
        return read_image(path, mode="RGB")

    def load_label(self, path: Path) -> np.ndarray:
        """A label map as uint8 (H, W) in train ids, 255 = ignore."""
        return self.decode_label(read_image(path, mode=None), path)

    @property
    def num_frames(self) -> int:
        return sum(len(video.frames) for video in self.videos)


def read_image(path: Path, mode: str | None) -> np.ndarray:
    """Read an image file fully, turning any decoding failure into a DatasetError naming the file.

    Its size is checked from the header before the pixels are decoded (:data:`vssbench.limits.DEFAULTS`,
    ``MAX_IMAGE_PIXELS``): scoring holds a float per class and pixel at the label's resolution."""
    if not path.is_file():
        raise DatasetError(f"missing file: {path}")
    try:
        with Image.open(path) as image:
            check_image_size(image.width, image.height, path, DatasetError)
            image.load()
            if mode is not None and image.mode != mode:
                image = image.convert(mode)
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DatasetError(f"cannot read image {path}: {error}") from error
    if mode is None and array.ndim != 2:
        raise DatasetError(f"label map {path} has shape {array.shape}; expected a single-channel (H, W) image")
    return array


def files_inside(root: Path, folder: Path, files: list[Path]) -> None:
    """``folder`` and ``files`` (listed from it) must lie inside the dataset ``root``, links followed:
    a link inside a dataset that leads out of it is bad input, not a place to read frames from."""
    check_inside(root, folder, f"dataset {root}", DatasetError)
    for path in files:
        if path.is_symlink():
            check_inside(root, path, f"dataset {root}", DatasetError)


def check_label_values(label: np.ndarray, allowed_max: int, path: Path, ignore: int = IGNORE_INDEX) -> None:
    """Raise a DatasetError when a raw label map holds values outside 0..allowed_max and ``ignore``."""
    bad = (label > allowed_max) & (label != ignore)
    if bad.any():
        values = sorted(int(v) for v in np.unique(label[bad]))[:8]
        raise DatasetError(
            f"label map {path} has values {values} outside the label set (expected 0..{allowed_max} or {ignore})"
        )


class FrameStream(torch.utils.data.Dataset):
    """Frames of a dataset in video order, as the runner consumes them.

    Items are dicts with the video name, frame index and stem, the normalised
    image at the dataset's input size, and the label map at its own resolution
    (uint8; an empty tensor for unlabelled frames); with ``raw``, also the frame as
    decoded (``raw``: uint8 RGB at its own size).
    """

    def __init__(self, dataset: VideoDataset, videos: list[Video] | None = None, raw: bool = False) -> None:
        self.dataset = dataset
        self.videos = dataset.videos if videos is None else videos
        self.raw = raw  # also the frame as decoded (uint8 RGB, its own size), for TC's flow
        self.index = [(v, f) for v, video in enumerate(self.videos) for f in range(len(video.frames))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict:
        return as_tensors(self.load(item))

    def load(self, item: int) -> dict:
        """The item with NumPy arrays: decoding, resizing and normalising, no torch operation
        (what a background loading thread may run, :func:`normalize_image`)."""
        video_index, frame_index = self.index[item]
        video = self.videos[video_index]
        record = video.frames[frame_index]
        image = self.dataset.load_image(record.image)
        if record.mask is not None:
            label = self.dataset.load_label(record.mask)
            if label.shape != image.shape[:2]:
                raise DatasetError(
                    f"mask {record.mask} is {label.shape[1]}x{label.shape[0]} but its frame {record.image} "
                    f"is {image.shape[1]}x{image.shape[0]}; expected the same size"
                )
            label = label.astype(np.uint8, copy=False)
            if self.dataset.label_size is not None:
                label = resize_label(label, self.dataset.label_size)
        else:
            label = np.empty(0, dtype=np.uint8)
        raw = image if self.raw else None
        image = resize_image(image, self.dataset.target_size(*image.shape[:2]))
        return {
            **({"raw": raw} if raw is not None else {}),
            "video": video.name,
            "video_index": video_index,  # in this stream's videos
            "frame_index": frame_index,
            "stem": record.stem,
            "is_first": frame_index == 0,
            "is_last": frame_index == len(video.frames) - 1,
            "image": normalize_image(image),
            "label": label,
        }


def as_tensors(item: dict) -> dict:
    """A loaded item with its image and label as tensors sharing the arrays' memory."""
    out = {**item, "image": torch.from_numpy(item["image"]), "label": torch.from_numpy(item["label"])}
    if "raw" in item:
        raw = np.ascontiguousarray(item["raw"])
        out["raw"] = torch.from_numpy(raw if raw.flags.writeable else raw.copy())  # a decoded image may be read-only
    return out


def read_split_list(root: Path, split: str) -> list[str]:
    """Video names listed in ``<root>/<split>.txt``, one per line; each must name a folder entry (no
    ``/``, no ``..``, not absolute), since it is joined to the root to find the frames and to the
    predictions folder to write them."""
    list_file = root / f"{split}.txt"
    if not list_file.is_file():
        raise DatasetError(f"split list {list_file} not found; expected a file with one video name per line")
    lines = [(number, line.strip()) for number, line in enumerate(list_file.read_text().splitlines(), 1) if line.strip()]
    for number, name in lines:
        plain_name(name, f"split list {list_file}, line {number},", DatasetError)
    names = [name for _, name in lines]
    if not names:
        raise DatasetError(f"split list {list_file} is empty; expected at least one video name")
    seen: dict[str, int] = {}
    for number, name in lines:
        if name in seen:
            raise DatasetError(f"split list {list_file} names video '{name}' twice (lines {seen[name]} and "
                               f"{number}); expected each video once, or it would be scored twice")
        seen[name] = number
    return names
