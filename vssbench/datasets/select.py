"""Opening a dataset by name, with the evaluation's resize and clip options, and choosing its videos: what
``bench run``, ``train`` and ``show`` share (their arguments name the same options)."""

from __future__ import annotations

from pathlib import Path

from vssbench.datasets import DATASETS, DatasetError  # noqa: F401 - DATASETS: the names open_dataset takes
from vssbench.datasets.base import VideoDataset

EXACT_VSPW_SIZE = (480, 853)  # --resize exact: DCFM's datasets/vspw.py test resize of frames and labels


def open_dataset(name: str, split: str, root: Path | None = None, cache_dir: Path | None = None,
                 resize: str | int = "keep-ratio", clip_radius: int | None = None) -> VideoDataset:
    """The ``split`` of dataset ``name`` under ``root`` (the synthetic set: generated into ``cache_dir``
    when no root is given). ``resize``: ``keep-ratio`` (the dataset's own rule), ``exact`` (VSPW at exactly
    480 x 853, labels too: DCFM's test) or an int N (frames' shorter side N); ``clip_radius`` (Cityscapes):
    clips of the labelled frame and R frames either side instead of the 30-frame snippets."""
    if resize == "exact" and name != "vspw":
        raise DatasetError(f"--resize exact: only with --dataset vspw (DCFM's VSPW test); got --dataset {name}")
    if clip_radius is not None and name != "cityscapes":
        raise DatasetError(f"--clip-radius: only with --dataset cityscapes; got --dataset {name}")
    if clip_radius is not None and clip_radius < 0:
        raise DatasetError(f"--clip-radius {clip_radius}: expected an integer >= 0")
    if name == "synthetic":
        from vssbench.datasets.synthetic import SyntheticSpec, ensure_generated, load_synthetic

        dataset = load_synthetic(root or ensure_generated(SyntheticSpec(), cache_dir), split)
    elif root is None:
        raise DatasetError(f"--dataset {name} needs --data-root pointing at the dataset folder")
    elif name == "vspw":
        from vssbench.datasets.vspw import VSPWDataset

        dataset = VSPWDataset.from_root(root, split)
        if resize == "exact":
            dataset.keep_ratio_scale, dataset.input_size = None, EXACT_VSPW_SIZE
            dataset.label_size = EXACT_VSPW_SIZE
    elif name == "camvid":
        from vssbench.datasets.camvid import CamVidDataset

        dataset = CamVidDataset.from_root(root, split)
    else:
        from vssbench.datasets.cityscapes import CityscapesDataset

        dataset = CityscapesDataset.from_root(root, split, clip_radius=clip_radius)
    if isinstance(resize, int):
        dataset.short_side = resize
    return dataset


def select_videos(dataset: VideoDataset, names: str | None = None, max_videos: int | None = None) -> None:
    """Keep the videos ``names`` (comma-separated, in that order) and then the first ``max_videos``."""
    if names:
        wanted = [name.strip() for name in names.split(",") if name.strip()]
        by_name = {video.name: video for video in dataset.videos}
        unknown = [name for name in wanted if name not in by_name]
        if unknown or not wanted:
            raise DatasetError(f"--videos {names!r}: {', '.join(unknown) or 'no name'} not in "
                               f"{dataset.name}/{dataset.split}; expected comma-separated names among "
                               f"{', '.join(list(by_name)[:8])}{' ...' if len(by_name) > 8 else ''}")
        dataset.videos = [by_name[name] for name in wanted]
    if max_videos is not None:
        if max_videos < 1:
            raise DatasetError(f"--max-videos {max_videos}: expected a positive integer")
        dataset.videos = dataset.videos[:max_videos]
