"""`bench show`: palettes, the error and flicker overlays, the still figure, the animations and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vssbench.benchmark.qualitative import (
    ERROR_COLOUR,
    FLICKER_COLOUR,
    Column,
    VideoFrames,
    colorize,
    error_mask,
    flicker_mask,
    marked,
    still_figure,
    washed,
)
from vssbench.cli import main
from vssbench.datasets.base import FrameRecord, Video
from vssbench.datasets.palettes import palette_for, voc_palette
from vssbench.datasets.synthetic import CLASS_NAMES

# VSPW_baseline test.py `_palette`, its first 22 entries as printed there (flat R, G, B).
VSPW_BASELINE_HEAD = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128, 128, 128, 128,
                      64, 0, 0, 191, 0, 0, 64, 128, 0, 191, 128, 0, 64, 0, 128, 191, 0, 128, 64, 128, 128, 191, 128,
                      128, 0, 64, 0, 128, 64, 0, 0, 191, 0, 128, 191, 0, 0, 64, 128, 128, 64, 128]


def test_vspw_palette_is_the_official_baselines():
    palette = palette_for("vspw")
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[:22].flatten().tolist() == VSPW_BASELINE_HEAD
    for index in (22, 23, 100, 123, 254, 255):  # `_palette` continues as (i, i, i) up to 255
        assert palette[index].tolist() == [index] * 3


def test_cityscapes_palette_is_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    palette = palette_for("cityscapes")
    assert [tuple(palette[i]) for i in range(19)] == [labels.trainId2label[i].color for i in range(19)]
    assert tuple(palette[255]) == labels.trainId2label[255].color


def test_synthetic_palette_gives_each_class_its_own_colour_and_colours_a_label_map():
    palette = palette_for("synthetic")
    colours = {tuple(palette[i]) for i in range(len(CLASS_NAMES))}
    assert len(colours) == len(CLASS_NAMES) and (0, 0, 0) not in colours
    assert (palette_for("synthetic-0123abcd") == palette).all()  # variants of the set share it
    labels = np.array([[0, 7], [255, 3]], dtype=np.uint8)
    image = colorize(labels, palette)
    assert image.shape == (2, 2, 3)
    assert image[0, 1].tolist() == palette[7].tolist() and image[1, 0].tolist() == [0, 0, 0]


def test_voc_palette_is_the_bit_interleaved_map():
    palette = voc_palette()
    assert palette[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert palette[8].tolist() == [64, 0, 0] and palette[9].tolist() == [192, 0, 0]
    assert palette_for("some-other-set")[9].tolist() == [192, 0, 0]


def test_flicker_marks_changed_predictions_where_the_ground_truth_held_still():
    # Two frames of 2x4: where the ground truth changes (column 1) or is ignore (column 3), a changed
    # prediction is not flicker; where it holds still, a changed prediction (column 0) is.
    previous_label = np.array([[1, 1, 2, 255], [1, 1, 2, 2]], dtype=np.uint8)
    label = np.array([[1, 2, 2, 255], [1, 2, 2, 2]], dtype=np.uint8)
    previous_prediction = np.array([[1, 1, 2, 0], [1, 1, 2, 2]], dtype=np.uint8)
    prediction = np.array([[3, 2, 2, 1], [1, 3, 2, 2]], dtype=np.uint8)
    mask = flicker_mask(previous_prediction, prediction, previous_label, label)
    assert mask.tolist() == [[True, False, False, False], [False, False, False, False]]
    truth = colorize(label, palette_for("synthetic"))
    panel = marked(truth, mask, FLICKER_COLOUR)
    assert panel[0, 0].tolist() == list(FLICKER_COLOUR)
    assert panel[1, 0].tolist() == washed(truth)[1, 0].tolist() != list(FLICKER_COLOUR)


def test_errors_are_wrong_labelled_pixels_never_ignore():
    label = np.array([[1, 2, 255]], dtype=np.uint8)
    prediction = np.array([[1, 3, 4]], dtype=np.uint8)
    assert error_mask(prediction, label).tolist() == [[False, True, False]]
    panel = marked(colorize(label, palette_for("synthetic")), error_mask(prediction, label), ERROR_COLOUR)
    assert panel[0, 1].tolist() == list(ERROR_COLOUR) and panel[0, 0].tolist() != list(ERROR_COLOUR)


def _frames(count: int = 6) -> VideoFrames:
    rng = np.random.default_rng(0)
    records = tuple(FrameRecord(image=None, mask=None) for _ in range(count))  # paths unused here
    video = Video("clip", records)
    labels = [rng.integers(0, 8, (12, 16), dtype=np.uint8) for _ in range(count)]
    images = [rng.integers(0, 255, (12, 16, 3), dtype=np.uint8) for _ in range(count)]
    return VideoFrames(video, list(range(count)), images, labels)


def test_still_figure_has_a_row_per_prediction_under_frame_and_truth_and_tags_key_frames(tmp_path):
    frames = _frames()
    columns = [Column("a", "perframe k=1", tmp_path, None), Column("b", "copy k=5", tmp_path, 5),
               Column("c", "mpvss k=5", tmp_path, 5)]
    predictions = [[label for label in frames.labels] for _ in columns]
    figure = still_figure(frames, columns, predictions, palette_for("synthetic"), [4, 5])
    grid = np.array(figure.axes).reshape(-1, 2)
    assert grid.shape == (2 + len(columns), 2)  # one row per prediction, one column per chosen frame
    assert [axis.get_ylabel() for axis in grid[:, 0]] == ["frame", "ground truth", *[c.title for c in columns]]
    tagged = {(r, c) for r in range(grid.shape[0]) for c in range(2) if any(t.get_text() == "key" for t in grid[r, c].texts)}
    assert tagged == {(3, 1), (4, 1)}  # frame 5 is a key frame of both k=5 rows; perframe has no key frames


def test_a_rotating_schedule_marks_each_videos_own_key_frames(tmp_path):
    column = Column("d", "dcfm (official) k=5", tmp_path, 5, rotate=True)
    assert [t for t in range(12) if column.is_key(t, video_index=2)] == [2, 7]
    assert column.frame_note(4, video_index=2) == "non-key: key + 2"
    assert [t for t in range(12) if Column("c", "copy k=5", tmp_path, 5).is_key(t, video_index=2)] == [0, 5, 10]
    frames = _frames()
    frames.number = 4  # the fifth video of its dataset: key frames at 4, 9, ...
    figure = still_figure(frames, [column], [list(frames.labels)], palette_for("synthetic"), [4, 5])
    grid = np.array(figure.axes).reshape(-1, 2)
    assert [any(t.get_text() == "key" for t in grid[2, c].texts) for c in range(2)] == [True, False]


@pytest.fixture(scope="module")
def shown(small_synthetic, tmp_path_factory):
    """`bench show --methods perframe,copy --intervals 5 --random-weights` on the small synthetic set."""
    out = tmp_path_factory.mktemp("show") / "show"
    code = main(["-q", "show", "--methods", "perframe,copy", "--intervals", "5", "--random-weights",
                 "--data-root", str(small_synthetic), "--out", str(out)])
    return code, out


def test_show_runs_the_methods_and_writes_animations_overlays_and_a_still(shown):
    code, out = shown
    assert code == 0
    manifest = json.loads((out / "show.json").read_text())
    assert [row["label"] for row in manifest["rows"]] == ["perframe_segformer-tiny_k1", "copy_segformer-tiny_k5"]
    assert all("[random weights]" in title for title in manifest["columns"])
    (video, entry), = manifest["videos"].items()
    assert video == "val_0000" and entry["frames"] == list(range(20))
    assert entry["still"]["frames"] == [0, 1, 2, 3, 4]  # the first key frame of k=5 and the 4 after it
    for mode in ("compare", "errors", "flicker"):
        animation = Image.open(out / entry["animations"][mode])
        assert animation.format == "GIF" and animation.n_frames == 20
        assert animation.info["duration"] == 250
        assert animation.size[0] == 4 * 96 + 3 * 2  # frame, truth, two rows; 96 px wide each, 2 px apart
    assert (out / video / "still.pdf").read_bytes().startswith(b"%PDF")
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert {row["videos"]["count"] for row in rows} == {1}


def test_show_from_rows_honours_labels_frames_format_fps_width_and_still_frames(shown, small_synthetic, tmp_path):
    _, first = shown
    out = tmp_path / "again"
    assert main(["-q", "show", str(first / "rows.jsonl"), "--data-root", str(small_synthetic), "--out", str(out),
                 "--labels", "copy_segformer-tiny_k5", "--frames", "5:10", "--format", "webp", "--fps", "2",
                 "--panel-width", "48", "--still-frames", "6,7"]) == 0
    manifest = json.loads((out / "show.json").read_text())
    entry = manifest["videos"]["val_0000"]
    assert [row["label"] for row in manifest["rows"]] == ["copy_segformer-tiny_k5"]
    assert entry["frames"] == [5, 6, 7, 8, 9] and entry["still"]["frames"] == [6, 7]
    animation = Image.open(out / entry["animations"]["compare"])
    assert animation.format == "WEBP" and animation.n_frames == 5
    animation.seek(1)
    animation.load()
    assert animation.info["duration"] == 500
    assert animation.size[0] == 3 * 48 + 2 * 2  # panels scaled down to 48 px


def test_run_videos_scores_only_the_named_videos(small_synthetic, tmp_path):
    rows = tmp_path / "rows.jsonl"
    assert main(["-q", "run", "--methods", "copy", "--intervals", "2", "--random-weights", "--data-root",
                 str(small_synthetic), "--videos", "val_0001", "--output", str(rows), "--speed-rounds", "0",
                 "--save-predictions", str(tmp_path / "predictions")]) == 0
    row = json.loads(rows.read_text())
    assert row["videos"]["count"] == 1 and row["metrics"]["frames_evaluated"] == 20
    assert [p.name for p in (tmp_path / "predictions" / row["label"]).iterdir()] == ["val_0001"]
    assert main(["-q", "run", "--methods", "copy", "--random-weights", "--data-root", str(small_synthetic),
                 "--videos", "val_0009", "--output", str(tmp_path / "other.jsonl")]) == 2


@pytest.mark.parametrize("arguments, named", [
    ([], "expected result files"),
    (["--frames", "9:3"], "--frames"),
    (["--videos", "val_0099"], "--videos"),
    (["--labels", "nothing_k1"], "--labels"),
    (["--still-frames", "19"], "--still-frames"),
])
def test_show_names_bad_input_and_exits_2(shown, small_synthetic, tmp_path, capsys, arguments, named):
    _, first = shown
    files = [] if not arguments else [str(first / "rows.jsonl")]
    code = main(["show", *files, "--data-root", str(small_synthetic), "--out", str(tmp_path / "o"),
                 "--frames", "0:10", *arguments])
    assert code == 2
    assert named in capsys.readouterr().err


def test_show_refuses_rows_without_saved_predictions(small_synthetic, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    assert main(["-q", "run", "--methods", "copy", "--intervals", "2", "--random-weights", "--data-root",
                 str(small_synthetic), "--max-videos", "1", "--output", str(rows), "--speed-rounds", "0"]) == 0
    assert main(["show", str(rows), "--data-root", str(small_synthetic), "--out", str(tmp_path / "o")]) == 2
    assert "--save-predictions" in capsys.readouterr().err


def test_show_refuses_two_rows_of_one_label(shown, small_synthetic, tmp_path, capsys):
    _, first = shown
    lines = (first / "rows.jsonl").read_text().splitlines()
    (tmp_path / "twice.jsonl").write_text("\n".join(lines + lines[:1]) + "\n")
    assert main(["show", str(tmp_path / "twice.jsonl"), "--data-root", str(small_synthetic), "--out",
                 str(tmp_path / "o")]) == 2
    assert "two rows labelled perframe_segformer-tiny_k1" in capsys.readouterr().err


def test_show_passes_the_run_options_to_the_run_it_makes(tmp_path):
    from vssbench.cli import build_parser
    from vssbench.cli.show import _show_run_arguments

    args = build_parser().parse_args(["show", "--methods", "mpvss,stt", "--intervals", "2,10", "--memory", "3",
                                      "--variants", "all", "--checkpoint", "mpvss=m.pt", "--shipped-weights",
                                      "--videos", "val_0002", "--data-root", "d", "--cache-dir", "c", "--out",
                                      str(tmp_path)])
    run = _show_run_arguments(args, tmp_path / "rows.jsonl")
    parsed = build_parser().parse_args(run)
    assert (parsed.methods, parsed.intervals, parsed.memory, parsed.variants) == ("mpvss,stt", "2,10", "3", "all")
    assert parsed.checkpoint == ["mpvss=m.pt"] and parsed.shipped_weights and not parsed.random_weights
    assert (parsed.videos, str(parsed.data_root), str(parsed.cache_dir)) == ("val_0002", "d", "c")
    assert parsed.save_predictions == tmp_path / "predictions" and parsed.speed_rounds == 0
    assert parsed.max_videos is None  # named videos: no cut to the first one
    default = _show_run_arguments(build_parser().parse_args(["show", "--methods", "copy", "--out", str(tmp_path)]),
                                  tmp_path / "rows.jsonl")
    assert build_parser().parse_args(default).max_videos == 1  # the first video, which show draws


def test_report_show_needs_html(shown, tmp_path, capsys):
    _, first = shown
    assert main(["report", str(first / "rows.jsonl"), "--out", str(tmp_path / "r"), "--show", str(first)]) == 2
    assert "--show: expected --html too" in capsys.readouterr().err
