"""Qualitative comparisons (``bench show``): what the methods predicted, side by side over time.

From rows whose predictions were saved (``bench run --save-predictions``), for each chosen video:

* ``compare.<gif|webp>``: an animation with one panel per column: the frame, the ground truth, then
  one per row (method, variant, interval), labels in the dataset's palette
  (:mod:`vssbench.datasets.palettes`). Each panel's title names the row and, for rows on a key-frame
  schedule, whether this frame was a key frame or how many frames it lies after one.
* ``errors.<ext>``: the same panels, each prediction drawn as the ground truth's colours washed out
  to pale, with the pixels it got wrong in red (ignore pixels never count); the title gives the
  share of pixels wrong.
* ``flicker.<ext>``: pixels whose predicted label changed from the previous frame while the ground
  truth did not (both frames labelled there, neither ignore), in violet over the washed-out ground
  truth: the pairwise picture behind mVC, which counts a clip's pixels whose label stays the same in
  the ground truth but not in the prediction. The first frame shown has no previous frame and so no
  flicker.
* ``still.png`` and ``still.pdf``: a paper-style figure, one row per prediction under rows for the
  frame and the ground truth, one column per chosen frame (by default the first key frame of the
  largest interval shown and the k-1 frames after it, at most 6), key frames marked.

``show.json`` beside them lists what was drawn and where each row's predictions and weights came
from, for ``bench report --html --show DIR``.

Animations are GIF by default (it plays in every browser and slide program) or animated WebP
(lossless); panels wider than ``panel_width`` are scaled down (nearest neighbour for labels) to keep
files small. GIF stores 256 colours per frame: Pillow's quantiser may shift a frame panel's colours
slightly, the label panels' few colours survive; the still figure is exact.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from vssbench.benchmark.report import RANDOM_MARK
from vssbench.datasets.base import IGNORE_INDEX, Video, VideoDataset, read_image
from vssbench.datasets.palettes import palette_for
from vssbench.files import atomic_path

ANIMATION_FORMATS = ("gif", "webp")
ERROR_COLOUR = (230, 0, 0)  # red
FLICKER_COLOUR = (200, 0, 255)  # violet
MAX_STILL_COLUMNS = 6
SHOW_SCHEMA = "vssbench.show/1"
_TITLE_HEIGHT = 30
_GAP = 2


class ShowError(ValueError):
    """Rows, videos or frames that cannot be drawn, named with what was expected."""


# --------------------------------------------------------------------------- pixels


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) train ids -> (H, W, 3) uint8 in ``palette`` (256 entries, 255 = ignore)."""
    return palette[labels.astype(np.uint8)]


def washed(colours: np.ndarray, strength: float = 0.7) -> np.ndarray:
    """Label colours blended toward white: a flat, pale background that marked pixels stand out on and
    that compresses to a few colours (a grey frame's noise would not)."""
    return (colours.astype(np.float32) * (1 - strength) + 255 * strength).astype(np.uint8)


def error_mask(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Pixels predicted wrong; ignore pixels are never wrong."""
    return (prediction != label) & (label != IGNORE_INDEX)


def flicker_mask(previous_prediction: np.ndarray, prediction: np.ndarray, previous_label: np.ndarray,
                 label: np.ndarray) -> np.ndarray:
    """Pixels whose prediction changed between two consecutive frames while the ground truth, valid in
    both, did not: the inconsistencies mVC counts, for one pair of frames."""
    stable_truth = (previous_label == label) & (label != IGNORE_INDEX)
    return stable_truth & (previous_prediction != prediction)


def marked(background: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The ground truth's colours, washed out, with ``mask`` painted in ``colour``."""
    out = washed(background)
    out[mask] = colour
    return out


def _scaled(array: np.ndarray, width: int, labels: bool) -> np.ndarray:
    if array.shape[1] <= width:
        return array
    height = max(1, round(array.shape[0] * width / array.shape[1]))
    resample = Image.Resampling.NEAREST if labels else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def compose(panels: Sequence[np.ndarray], titles: Sequence[Sequence[str]]) -> Image.Image:
    """Panels side by side on white, each under its title (one or two lines)."""
    height = max(panel.shape[0] for panel in panels)
    width = sum(panel.shape[1] for panel in panels) + _GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height + _TITLE_HEIGHT), "white")
    draw, font, x = ImageDraw.Draw(canvas), _font(11), 0
    for panel, lines in zip(panels, titles):
        for line_number, line in enumerate(lines[:2]):
            draw.text((x + 2, 2 + 13 * line_number), line, fill="black", font=font)
        canvas.paste(Image.fromarray(panel), (x, _TITLE_HEIGHT))
        x += panel.shape[1] + _GAP
    return canvas


def write_animation(frames: Sequence[Image.Image], path: Path, fps: float) -> Path:
    """The frames as a looping GIF or lossless animated WebP (by ``path``'s suffix), written atomically."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ANIMATION_FORMATS:
        raise ShowError(f"animation {path}: expected a name ending in .gif or .webp")
    duration = round(1000 / fps)
    options = {"format": "GIF", "optimize": True} if fmt == "gif" else {"format": "WEBP", "lossless": True,
                                                                        "method": 4}
    with atomic_path(path) as temporary:
        frames[0].save(temporary, save_all=True, append_images=list(frames[1:]), duration=duration, loop=0,
                       **options)
    return path


# --------------------------------------------------------------------------- what is drawn


@dataclass(frozen=True)
class Column:
    """One row's predictions, as one column of panels."""

    label: str
    title: str  # the method (variant): preset, and the schedule
    predictions: Path  # <predictions_dir>; a frame's file is <predictions>/<video>/<stem>.png
    key_interval: int | None  # None: no key frames (every frame computed alike, or a memory schedule)
    offset: int = 0
    rotate: bool = False  # the schedule's ``rotate_offset``: the v-th video's offset is (offset + v) % k
    row: dict = field(default_factory=dict, compare=False, repr=False)  # the result row drawn

    def _since_key(self, frame_index: int, video_index: int) -> int:
        offset = (self.offset + video_index) % self.key_interval if self.rotate else self.offset
        return (frame_index - offset) % self.key_interval

    def frame_note(self, frame_index: int, video_index: int = 0) -> str:
        """"KEY frame", "non-key: key + 3" (three frames after the last key frame), or "every frame"."""
        if self.key_interval is None or self.key_interval == 1:
            return "every frame"
        since = self._since_key(frame_index, video_index)
        return "KEY frame" if since == 0 else f"non-key: key + {since}"

    def is_key(self, frame_index: int, video_index: int = 0) -> bool:
        return self.key_interval is not None and self._since_key(frame_index, video_index) == 0

    def prediction(self, video: str, stem: str) -> np.ndarray:
        path = self.predictions / video / f"{stem}.png"
        if not path.is_file():
            raise ShowError(f"row {self.label}: no saved prediction {path}; expected the row's --save-predictions "
                            f"folder to hold every frame shown")
        return read_image(path, mode=None)


def columns_from_rows(rows: list[dict], labels: Sequence[str] | None, uses_key_frames: dict[str, bool],
                      names: dict[str, str]) -> list[Column]:
    """The columns of the finished rows that saved predictions (those labelled ``labels``, in that order).

    ``uses_key_frames`` says per method whether its schedule's key frames change what it computes
    (perframe, the clip methods and STT: no); ``names`` gives each row's printed name."""
    saved: dict[str, dict] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("predictions_dir"):
            if row["label"] in saved:
                raise ShowError(f"two rows labelled {row['label']} saved predictions (several seeds or runs in one "
                                "file); expected one row per label: draw each run's file on its own")
            saved[row["label"]] = row
    if labels:
        missing = [label for label in labels if label not in saved]
        if missing:
            raise ShowError(f"--labels: no finished row with saved predictions labelled {', '.join(missing)}; "
                            f"expected one of {', '.join(saved) or '(none: run with --save-predictions)'}")
        chosen = [saved[label] for label in labels]
    else:
        chosen = list(saved.values())
    if not chosen:
        raise ShowError("no finished row saved its predictions; expected rows of `bench run --save-predictions DIR`"
                        " (or give --methods to run them)")
    columns = []
    for row in chosen:
        schedule = row["schedule"]
        interval = schedule.get("key_interval") if uses_key_frames.get(row["method"], True) else None
        when = f"M={schedule['memory_frames']}" if schedule.get("type") == "memory" else f"k={schedule.get('key_interval')}"
        random = RANDOM_MARK if row.get("weights") == "random" else ""
        columns.append(Column(label=row["label"], title=f"{names[row['label']]} {when}{random}",
                              predictions=Path(row["predictions_dir"]), key_interval=interval,
                              offset=schedule.get("offset", 0), rotate=schedule.get("rotate_offset", False),
                              row=row))
    return columns


@dataclass
class VideoFrames:
    """The labelled frames of one video that are drawn: their index in the video, images and labels, and
    the video's index in the dataset (``number``, which a rotating key-frame schedule reads)."""

    video: Video
    indices: list[int]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    number: int = 0

    @classmethod
    def load(cls, dataset: VideoDataset, video: Video, first: int, last: int | None) -> VideoFrames:
        indices = [i for i, record in enumerate(video.frames)
                   if record.mask is not None and i >= first and (last is None or i < last)]
        if not indices:
            raise ShowError(f"--frames {first}:{'' if last is None else last}: video {video.name} has no labelled "
                            f"frame there; expected a range inside its {len(video.frames)} frames")
        images, labels = [], []
        for index in indices:
            record = video.frames[index]
            image, label = dataset.load_image(record.image), dataset.load_label(record.mask)
            if image.shape[:2] != label.shape:
                image = np.asarray(Image.fromarray(image).resize(label.shape[::-1], Image.Resampling.BILINEAR))
            images.append(image)
            labels.append(label)
        number = [v.name for v in dataset.videos].index(video.name)
        return cls(video, indices, images, labels, number)


def _panels(frames: VideoFrames, columns: list[Column], palette: np.ndarray, width: int, position: int,
            predictions: list[list[np.ndarray]], mode: str) -> tuple[list[np.ndarray], list[list[str]]]:
    """The panels and titles of one animation frame (``mode``: compare, errors or flicker)."""
    index, image, label = frames.indices[position], frames.images[position], frames.labels[position]
    stem = frames.video.frames[index].stem
    truth = colorize(label, palette)
    panels = [_scaled(image, width, False), _scaled(truth, width, True)]
    titles = [[f"frame {index}", stem], ["ground truth", ""]]
    for column, predicted in zip(columns, predictions):
        prediction = predicted[position]
        if mode == "compare":
            panel, extra = colorize(prediction, palette), ""
        elif mode == "errors":
            mask = error_mask(prediction, label)
            panel, extra = marked(truth, mask, ERROR_COLOUR), f", {100 * mask.mean():.1f}% wrong"
        else:
            consecutive = position > 0 and frames.indices[position - 1] == index - 1
            mask = (flicker_mask(predicted[position - 1], prediction, frames.labels[position - 1], label)
                    if consecutive else np.zeros(label.shape, dtype=bool))
            panel, extra = marked(truth, mask, FLICKER_COLOUR), f", {100 * mask.mean():.1f}% flicker"
        panels.append(_scaled(panel, width, True))
        titles.append([column.title, column.frame_note(index, frames.number) + extra])
    return panels, titles


def default_still_frames(frames: VideoFrames, columns: list[Column]) -> list[int]:
    """The first key frame of the largest interval shown, and the k-1 frames after it (at most
    :data:`MAX_STILL_COLUMNS`); without key-frame rows, the first frames shown."""
    intervals = [c for c in columns if c.key_interval]
    if intervals:
        widest = max(intervals, key=lambda c: c.key_interval)
        keys = [i for i in frames.indices if widest.is_key(i, frames.number)]
        start = keys[0] if keys else frames.indices[0]
        count = widest.key_interval
    else:
        start, count = frames.indices[0], MAX_STILL_COLUMNS
    chosen = [i for i in frames.indices if i >= start][: min(count, MAX_STILL_COLUMNS)]
    return chosen or frames.indices[:MAX_STILL_COLUMNS]


def still_figure(frames: VideoFrames, columns: list[Column], predictions: list[list[np.ndarray]],
                 palette: np.ndarray, chosen: list[int]) -> plt.Figure:
    """The paper-style grid: rows frame, ground truth, then one per column; one column per chosen frame.
    Key frames of each prediction row carry a black corner tag "key"."""
    unknown = [i for i in chosen if i not in frames.indices]
    if unknown:
        raise ShowError(f"--still-frames {','.join(map(str, unknown))}: not among the frames shown of "
                        f"{frames.video.name} ({frames.indices[0]}..{frames.indices[-1]})")
    positions = [frames.indices.index(i) for i in chosen]
    row_names = ["frame", "ground truth", *[c.title for c in columns]]
    height, width = frames.labels[0].shape
    cell = 1.6
    figure, axes = plt.subplots(len(row_names), len(chosen), squeeze=False,
                                figsize=(cell * len(chosen) + 1.4, cell * height / width * len(row_names) + 0.4))
    for c, (index, position) in enumerate(zip(chosen, positions)):
        images = [frames.images[position], colorize(frames.labels[position], palette),
                  *[colorize(p[position], palette) for p in predictions]]
        for r, image in enumerate(images):
            axis = axes[r][c]
            axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(f"t = {index}", fontsize=8)
            if c == 0:
                axis.set_ylabel(row_names[r], fontsize=7, rotation=0, ha="right", va="center")
            if r >= 2 and columns[r - 2].is_key(index, frames.number) and columns[r - 2].key_interval != 1:
                axis.text(0.02, 0.96, "key", transform=axis.transAxes, fontsize=6, va="top", color="white",
                          bbox={"facecolor": "black", "pad": 1, "linewidth": 0})
    figure.subplots_adjust(wspace=0.03, hspace=0.05)
    return figure


# --------------------------------------------------------------------------- the whole


@dataclass(frozen=True)
class ShowSettings:
    out: Path
    videos: Sequence[str] | None = None  # None: the first video of the dataset
    first_frame: int = 0
    last_frame: int | None = None  # exclusive; None: to the end of the video
    still_frames: Sequence[int] | None = None
    animation_format: str = "gif"
    fps: float = 4.0
    panel_width: int = 256


def show(columns: list[Column], dataset: VideoDataset, settings: ShowSettings,
         progress: Callable[[Path], object] | None = None) -> dict:
    """Draw every output of :mod:`this module <vssbench.benchmark.qualitative>` for the chosen videos;
    returns the manifest written to ``<out>/show.json``."""
    if settings.animation_format not in ANIMATION_FORMATS:
        raise ShowError(f"--format {settings.animation_format}: expected one of {', '.join(ANIMATION_FORMATS)}")
    by_name = {video.name: video for video in dataset.videos}
    names = list(settings.videos) if settings.videos else [dataset.videos[0].name]
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ShowError(f"--videos: {', '.join(unknown)} not in {dataset.name}/{dataset.split}; expected some of "
                        f"{', '.join(list(by_name)[:10])}{' ...' if len(by_name) > 10 else ''}")
    palette = palette_for(dataset.name)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"schema": SHOW_SCHEMA, "dataset": dataset.name, "split": dataset.split,
                "rows": [_provenance(c.row) for c in columns],
                "columns": [c.title for c in columns], "videos": {}}
    for name in names:
        frames = VideoFrames.load(dataset, by_name[name], settings.first_frame, settings.last_frame)
        predictions = [[c.prediction(name, frames.video.frames[i].stem) for i in frames.indices] for c in columns]
        for column, predicted in zip(columns, predictions):
            if predicted[0].shape != frames.labels[0].shape:
                raise ShowError(f"row {column.label}: prediction of {name} is {predicted[0].shape[1]}x"
                                   f"{predicted[0].shape[0]}, its label {frames.labels[0].shape[1]}x"
                                   f"{frames.labels[0].shape[0]}; expected predictions of this dataset")
        folder = out / name
        entry = {"frames": frames.indices, "animations": {}}
        for mode in ("compare", "errors", "flicker"):
            images = [compose(*_panels(frames, columns, palette, settings.panel_width, p, predictions, mode))
                      for p in range(len(frames.indices))]
            path = write_animation(images, folder / f"{mode}.{settings.animation_format}", settings.fps)
            entry["animations"][mode] = str(path.relative_to(out))
            if progress is not None:
                progress(path)
        still = list(settings.still_frames) if settings.still_frames else default_still_frames(frames, columns)
        figure = still_figure(frames, columns, predictions, palette, still)
        entry["still"] = {"frames": still, "files": []}
        try:
            for suffix in ("png", "pdf"):  # no creation date in the PDF: the same predictions give the same bytes
                path = folder / f"still.{suffix}"
                with atomic_path(path) as temporary:
                    figure.savefig(temporary, format=suffix, dpi=200, bbox_inches="tight",
                                   metadata={"CreationDate": None} if suffix == "pdf" else None)
                entry["still"]["files"].append(str(path.relative_to(out)))
                if progress is not None:
                    progress(path)
        finally:
            plt.close(figure)
        manifest["videos"][name] = entry
    with atomic_path(out / "show.json") as temporary:
        temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _provenance(row: dict) -> dict:
    """What a reader needs to know of a row drawn: its identity, weights and the code that ran."""
    checkpoint = row.get("checkpoint") or {}
    return {"label": row["label"], "method": row["method"], "preset": row["preset"], "variant": row["variant"],
            "schedule": row["schedule"], "weights": row.get("weights"), "predictions_dir": row["predictions_dir"],
            "checkpoint": {k: checkpoint.get(k) for k in ("path", "sha256", "shipped") if checkpoint.get(k)},
            "git_commit": (row.get("env") or {}).get("git_commit"), "metrics": {
                k: (row.get("metrics") or {}).get(k) for k in ("miou", "mvc8")}}


def load_manifest(folder: Path) -> dict:
    """``<folder>/show.json`` as written by :func:`show`; a ShowError naming the file if it is not one."""
    path = folder / "show.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ShowError(f"--show {folder}: cannot read {path} ({error}); expected a folder written by `bench show`")
    if not isinstance(manifest, dict) or manifest.get("schema") != SHOW_SCHEMA:
        raise ShowError(f"--show {folder}: {path} is not a `bench show` manifest (schema {SHOW_SCHEMA})")
    return manifest
