import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SMALL_SPEC
from reference_metrics import confusion, miou_and_wiou, vc_vspw
from vssbench.benchmark import native
from vssbench.benchmark.results import load_rows, write_rows_atomically
from vssbench.benchmark.runner import (
    EvaluationOptions,
    PreparedWeights,
    SweepSettings,
    _check_variant_names,
    _item_bytes,
    _variants_for,
    prefetched,
    run_sweep,
    stepped,
)
from vssbench.cli import main
from vssbench.datasets.base import DatasetError, FrameStream
from vssbench.datasets.synthetic import CLASS_NAMES, load_synthetic
from vssbench.methods.base import KeySchedule, SpecError, build_method
from vssbench.methods.weights import save_checkpoint


@pytest.fixture(scope="module")
def trained_run(small_synthetic, tmp_path_factory):
    """`bench run --methods perframe,copy` on the small synthetic set, auto-training a short schedule."""
    work = tmp_path_factory.mktemp("run")
    argv = ["run", "--methods", "perframe,copy", "--data-root", str(small_synthetic), "--intervals", "1,5",
            "--train-iters", "60", "--cache-dir", str(work / "cache"), "--output", str(work / "rows.jsonl"),
            "--save-predictions", str(work / "predictions"), "--num-workers", "0"]
    code = main(argv)
    return code, work, argv


def test_prefetching_keeps_order_holds_at_most_its_budget_and_raises_in_order(small_synthetic):
    stream = FrameStream(load_synthetic(small_synthetic, "val"))
    load, loaded = stream.load, []

    def recorded_load(index):
        loaded.append(index)
        if index == 7:
            raise DatasetError("cannot read image frame 7")
        return load(index)

    stream.load = recorded_load
    items = prefetched(stream, max_bytes=3 * _item_bytes(load(0)))
    first = next(items)
    deadline = time.monotonic() + 10
    while len(loaded) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert loaded == [0, 1, 2, 3]  # the consumed item and three held: the budget, no more
    assert first["frame_index"] == 0 and torch.equal(first["image"], torch.from_numpy(load(0)["image"]))
    indices = []
    with pytest.raises(DatasetError, match="frame 7"):
        indices.extend(item["frame_index"] for item in items)
    assert indices == [1, 2, 3, 4, 5, 6]  # every item before the bad one, in order
    assert not any(thread.name == "vssbench-prefetch" for thread in threading.enumerate())


def test_run_writes_one_row_per_configuration(trained_run, capsys):
    code, work, _ = trained_run
    assert code == 0
    rows = load_rows(work / "rows.jsonl")
    assert [r["label"] for r in rows] == ["perframe_segformer-tiny_k1", "copy_segformer-tiny_k1",
                                          "copy_segformer-tiny_k5"]
    for row in rows:
        assert row["status"] == "ok" and row["error"] is None
        assert row["dataset"] == f"synthetic-{SMALL_SPEC.fingerprint}" and row["split"] == "val"
        assert row["resolution"] == [64, 96]
        for key in ("miou", "wiou", "mvc8", "mvc16"):
            assert 0 <= row["metrics"][key] <= 100
        assert row["metrics"]["miou_mode"] == "vspw" and row["metrics"]["vc_protocol"] == "vspw"
        assert list(row["metrics"]["per_class_iou"]) == list(CLASS_NAMES)
        assert row["env"]["torch_version"] == torch.__version__ and row["env"]["seed"] == 0
        assert row["checkpoint"]["sha256"] and len(row["config_hash"]) == 16
        assert row["timing"]["metric_code"] == ("c" if native.kernels() is not None else "torch")
        training = row["checkpoint"]["declared"]["training"]  # what the auto-trained segmentor was trained on, and how long
        assert (training["dataset"], training["split"], training["iterations"]) == (row["dataset"], "train", 60)
    # copy at k=1 is perframe; at k=5 it is worse.
    assert rows[1]["metrics"]["miou"] == rows[0]["metrics"]["miou"]
    assert rows[2]["metrics"]["miou"] < rows[1]["metrics"]["miou"]
    # The video method's rows are timed against their segmentor; the per-frame row is its own reference.
    assert "speed_vs_per_frame" not in rows[0]["cost"]
    for row, interval in ((rows[1], 1), (rows[2], 5)):
        speed = row["cost"]["speed_vs_per_frame"]
        assert (speed["reference"], speed["interval"], len(speed["rounds"])) == ("perframe:segformer-tiny", interval, 5)
        assert speed["ratio"] == sorted(speed["rounds"])[2] > 0


def test_row_metrics_equal_metrics_recomputed_from_saved_pngs(trained_run, small_synthetic):
    _, work, _ = trained_run
    dataset = load_synthetic(small_synthetic, "val")
    for row in load_rows(work / "rows.jsonl"):
        videos, predictions, targets = [], [], []
        for video in dataset.videos:
            video_targets, video_predictions = [], []
            for frame in video.frames:
                png = work / "predictions" / row["label"] / video.name / f"{frame.stem}.png"
                prediction = np.asarray(Image.open(png))
                assert prediction.dtype == np.uint8 and prediction.max() < 8
                raw = np.asarray(Image.open(frame.mask)).astype(int)
                target = np.where((raw == 0) | (raw == 255), 255, raw - 1)
                video_targets.append(target)
                video_predictions.append(prediction)
            videos.append((video_targets, video_predictions))
            predictions += video_predictions
            targets += video_targets
        miou, wiou, _ = miou_and_wiou(confusion(predictions, targets, 8), "vspw")
        assert row["predictions_dir"] == str(work / "predictions" / row["label"])
        assert row["metrics"]["miou"] == pytest.approx(100 * miou, abs=1e-4)
        assert row["metrics"]["wiou"] == pytest.approx(100 * wiou, abs=1e-4)
        assert row["metrics"]["mvc8"] == pytest.approx(100 * vc_vspw(videos, 8), abs=1e-4)
        assert row["metrics"]["mvc16"] == pytest.approx(100 * vc_vspw(videos, 16), abs=1e-4)


def test_rerun_skips_finished_rows(trained_run, capsys):
    _, work, argv = trained_run
    before = (work / "rows.jsonl").read_text()
    assert main(argv) == 0
    assert (work / "rows.jsonl").read_text() == before
    assert "perframe_segformer-tiny_k1" in capsys.readouterr().out


def test_a_rerun_on_fewer_videos_scores_them_instead_of_resuming(trained_run, tmp_path):
    _, work, argv = trained_run
    output = tmp_path / "rows.jsonl"
    shutil.copy(work / "rows.jsonl", output)
    argv = [*argv[: argv.index("--output")], "--output", str(output), "--max-videos", "1"]
    assert main(argv) == 0
    rows = load_rows(output)
    assert [r["videos"]["count"] for r in rows] == [2, 2, 2, 1, 1, 1]
    assert rows[0]["videos"]["sha256"] != rows[3]["videos"]["sha256"]
    assert rows[3]["timing"]["frames"] == rows[0]["timing"]["frames"] // 2


def test_nan_scores_become_an_error_row_and_the_sweep_goes_on(small_synthetic, tmp_path, capsys):
    broken = build_method("perframe:segformer-tiny", 8)
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.fill_(float("nan"))
    save_checkpoint(broken, tmp_path / "nan.pt")
    good = save_checkpoint(build_method("copy:segformer-tiny", 8), tmp_path / "good.pt")
    code = main(["run", "--methods", "perframe,copy", "--data-root", str(small_synthetic), "--intervals", "2",
                 "--checkpoint", f"perframe={tmp_path / 'nan.pt'}", "--checkpoint", f"copy={good}",
                 "--output", str(tmp_path / "rows.jsonl"), "--num-workers", "0"])
    assert code == 1
    rows = load_rows(tmp_path / "rows.jsonl")
    assert [r["status"] for r in rows] == ["error", "ok"]
    assert "NaN or infinite scores on val_0000/00000000" in rows[0]["error"]
    assert "FAILED perframe_segformer-tiny_k1" in capsys.readouterr().err


def test_checkpoint_of_another_architecture_is_bad_input_before_any_row(small_synthetic, tmp_path, capsys):
    other = save_checkpoint(build_method("perframe:pspnet-tiny", 8), tmp_path / "psp.pt")
    code = main(["run", "--methods", "perframe,perframe:segformer-tiny", "--data-root", str(small_synthetic),
                 "--checkpoint", f"perframe:segformer-tiny={other}", "--output", str(tmp_path / "rows.jsonl"),
                 "--num-workers", "0"])
    assert code == 2  # checked before the first method's rows are computed
    error = capsys.readouterr().err
    assert f"{other} is a vssbench checkpoint of perframe:pspnet-tiny" in error
    assert not (tmp_path / "rows.jsonl").exists()


@pytest.mark.parametrize(
    "break_it,named",
    [
        (lambda r: (r / "data/val_0000/mask/00000002.png").unlink(), "00000002"),
        (lambda r: Image.fromarray(np.full((64, 96), 200, np.uint8)).save(r / "data/val_0000/mask/00000002.png"),
         "00000002.png has values [200]"),
        (lambda r: (r / "data/val_0000/origin/00000002.jpg").write_bytes(b"\x00garbage"), "00000002.jpg"),
    ],
    ids=["missing-mask", "label-out-of-range", "unreadable-frame"],
)
def test_bad_vspw_input_exits_non_zero_naming_the_file(vspw_copy, small_synthetic, tmp_path, capsys, break_it, named):
    root = vspw_copy
    break_it(root)
    output = tmp_path / "rows.jsonl"
    finished = {"label": "earlier_row", "config_hash": "0123456789abcdef", "status": "ok"}
    write_rows_atomically(output, [finished])
    code = main(["run", "--methods", "perframe:segformer-tiny", "--dataset", "vspw", "--data-root", str(root),
                 "--max-videos", "1", "--output", str(output), "--num-workers", "0", "--random-weights"])
    assert code == 2
    assert named in capsys.readouterr().err
    assert load_rows(output) == [finished]  # a finished result survives the failed sweep


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "--methods", "mpvss9"], "unknown method 'mpvss9'"),
        (["run", "--methods", "perframe:segformer-b9"], "unknown preset 'segformer-b9'"),
        (["run", "--intervals", "0,5"], "--intervals '0,5': expected comma-separated positive integers"),
        (["run", "--dataset", "vspw"], "--dataset vspw needs --data-root"),
        (["run", "--dataset", "vspw", "--data-root", "/nonexistent/vspw"], "/nonexistent/vspw does not exist"),
        (["data", "synthetic", "--out", "/nonexistent/d", "--brightness-jitter", "1.5"],
         "--brightness-jitter 1.5: expected a noise std >= 0 and a jitter in [0, 1)"),
        (["run", "--stage-iters", "0"], "--stage-iters 0: expected a positive number of iterations"),
        (["train", "--method", "dff:tiny", "--iters", "-5"], "--iters -5: expected a positive number of iterations"),
        (["run", "--speed-rounds", "-1"], "--speed-rounds -1: expected a number of rounds >= 0"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_variant_selection_across_methods():
    requested = ["default", "feature-reuse"]
    _check_variant_names(["perframe", "tfc:tiny", "mpvss:tiny"], requested)
    assert _variants_for("perframe", requested) == ["default"]  # no variants: its only one
    assert _variants_for("tfc:tiny", requested) == ["sparse-msda-0.8", "feature-reuse"]
    assert _variants_for("mpvss:tiny", requested) == ["query-based-flow"]
    with pytest.raises(SpecError, match=r"none of the variants \['feature-reuse'\] exists for mpvss:tiny"):
        _variants_for("mpvss:tiny", ["feature-reuse"])
    with pytest.raises(SpecError, match="unknown variant 'feature-reuze' for perframe, tfc:tiny"):
        _check_variant_names(["perframe", "tfc:tiny"], ["feature-reuze", "linear-interp"])


def test_list_and_data_commands(tmp_path, capsys):
    from vssbench.methods.base import METHODS

    assert main(["list"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name, cls in METHODS.items():  # each method: its default preset marked, the others counted
        assert rows[name][0] == f"{cls.default_preset}*"
        assert rows[name][1] == f"+{len(cls.presets) - 1}"
    assert rows["perframe"][0] == "segformer-tiny*" and rows["tfc"][2] == "sparse-msda-0.8*"
    assert main(["data", "synthetic", "--out", str(tmp_path / "d"), "--train-videos", "1", "--val-videos", "1",
                 "--frames", "3", "--size", "32x48"]) == 0
    assert len(list((tmp_path / "d/data/val_0000/mask").glob("*.png"))) == 3
    meta = json.loads((tmp_path / "d/meta.json").read_text())
    assert meta["spec"]["height"] == 32


def test_vspw_run_resizes_inputs_and_scores_at_label_resolution(vspw_copy, small_synthetic, tmp_path):
    root = vspw_copy
    weights = save_checkpoint(build_method("perframe:segformer-tiny", 124), tmp_path / "w.pt")
    output = tmp_path / "rows.jsonl"
    assert main(["run", "--methods", "perframe:segformer-tiny", "--dataset", "vspw", "--data-root", str(root),
                 "--max-videos", "1", "--checkpoint", str(weights), "--output", str(output),
                 "--save-predictions", str(tmp_path / "pred"), "--num-workers", "0"]) == 0
    (row,) = load_rows(output)
    assert row["resolution"] == "keep-ratio 480x853" and row["metrics"]["frames_evaluated"] == 20
    assert len(row["metrics"]["per_class_iou"]) == 124
    assert row["cost"]["flop_resolution"] == [480, 720]  # 64x96 scaled into 480x853 keeping the ratio
    png = np.asarray(Image.open(tmp_path / "pred" / row["label"] / "val_0000" / "00000000.png"))
    assert png.shape == (64, 96) and png.max() < 124


def test_vspw_exact_resize_scores_frames_and_labels_at_480x853_as_dcfms_test(vspw_copy, small_synthetic, tmp_path,
                                                                            capsys):
    """--resize exact: frames resized (bilinear) and labels (nearest) to exactly 480x853, scored there; the
    row's resolution says so. Without it the label keeps its size (the test above)."""
    from vssbench.datasets.transforms import resize_label
    from vssbench.datasets.vspw import VSPWDataset

    weights = save_checkpoint(build_method("perframe:segformer-tiny", 124), tmp_path / "w.pt")
    output = tmp_path / "rows.jsonl"
    assert main(["run", "--methods", "perframe:segformer-tiny", "--dataset", "vspw", "--data-root", str(vspw_copy),
                 "--resize", "exact", "--max-videos", "1", "--checkpoint", str(weights), "--output", str(output),
                 "--save-predictions", str(tmp_path / "pred"), "--num-workers", "0", "--speed-rounds", "0"]) == 0
    (row,) = load_rows(output)
    assert row["resolution"] == "exact 480x853, labels resized to 480x853 (nearest)"
    assert row["cost"]["flop_resolution"] == [480, 853]
    png = np.asarray(Image.open(tmp_path / "pred" / row["label"] / "val_0000" / "00000000.png"))
    assert png.shape == (480, 853)
    dataset = VSPWDataset.from_root(vspw_copy, "val")
    plain = FrameStream(dataset).load(0)["label"]
    dataset.keep_ratio_scale, dataset.input_size, dataset.label_size = None, (480, 853), (480, 853)
    exact = FrameStream(dataset).load(0)
    assert exact["image"].shape == (3, 480, 853) and np.array_equal(exact["label"], resize_label(plain, (480, 853)))
    assert main(["run", "--methods", "copy", "--resize", "exact", "--random-weights", "--data-root",
                 str(small_synthetic), "--output", str(tmp_path / "x.jsonl")]) == 2
    assert "--resize exact: only with --dataset vspw" in capsys.readouterr().err


def test_each_method_starts_from_its_seed_whatever_the_sweep_built_before(small_synthetic, tmp_path):
    dataset = load_synthetic(small_synthetic, "val")
    initial_weights = []

    def prepare(method):  # no checkpoint: the weights the runner built are evaluated
        initial_weights.append({k: v.clone() for k, v in method.state_dict().items()})
        return PreparedWeights()

    def sweep(specs):
        settings = SweepSettings(specs=specs, intervals=[1], output=tmp_path / f"{len(specs)}.jsonl",
                                 evaluation=EvaluationOptions(progress=False))
        return run_sweep(settings, dataset, prepare)

    alone = sweep(["perframe:pspnet-tiny"])
    after_another = sweep(["perframe:segformer-tiny", "perframe:pspnet-tiny"])
    assert initial_weights[0].keys() == initial_weights[2].keys()
    assert all(torch.equal(initial_weights[0][k], initial_weights[2][k]) for k in initial_weights[0])
    assert alone[0]["metrics"]["miou"] == after_another[1]["metrics"]["miou"]


def test_rows_name_the_commit_read_when_the_process_started(monkeypatch):
    """A sweep that runs for hours while the tree is committed to must not name the later commit."""
    import subprocess

    from vssbench.benchmark import results

    results.git_commit.cache_clear()
    first = results.environment("cpu", 0)["git_commit"]
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: pytest.fail("git was read a second time"))
    assert results.environment("cpu", 1)["git_commit"] == first


class _Recorder:
    """A stand-in method that records the order it is stepped in and returns the frame as its scores."""

    uses_key_frames = True

    def __init__(self, lookahead: bool) -> None:
        self.key_lookahead, self.calls = lookahead, []

    def reset(self) -> None:
        self.calls.append("reset")

    def no_next_key(self) -> None:
        self.calls.append("no next key")

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        self.calls.append(("key" if is_key else "") + str(int(frame)))
        return frame


@pytest.mark.parametrize("lookahead", [False, True])
def test_a_lookahead_method_gets_each_key_frame_first_and_scores_come_back_in_display_order(lookahead):
    method = _Recorder(lookahead)
    items = [{"image": torch.tensor(float(t)), "frame_index": t, "video_index": 0, "is_first": t == 0,
              "is_last": t == 6} for t in range(7)]
    out = list(stepped(method, KeySchedule(3), items, torch.device("cpu")))
    assert [int(item["frame_index"]) for item, *_ in out] == list(range(7))
    assert all(int(scores) == item["frame_index"] for item, scores, *_ in out)
    assert [is_key for _, _, is_key, _ in out] == [t % 3 == 0 for t in range(7)]
    if lookahead:
        assert method.calls == ["reset", "key0", "key3", "1", "2", "key6", "4", "5"]
    else:
        assert method.calls == ["reset", "key0", "1", "2", "key3", "4", "5", "key6"]
    items[-1]["is_last"] = False  # an eighth frame after the last key frame: it has no next key frame
    items.append({**items[0], "image": torch.tensor(7.0), "frame_index": 7, "is_first": False, "is_last": True})
    method.calls = []
    assert [item["frame_index"] for item, *_ in stepped(method, KeySchedule(3), items, torch.device("cpu"))] == \
        list(range(8))
    if lookahead:
        assert method.calls == ["reset", "key0", "key3", "1", "2", "key6", "4", "5", "no next key", "7"]


def test_a_rotating_schedule_reads_the_videos_index_in_the_dataset_not_in_the_shard():
    method = _Recorder(False)
    items = [{"image": torch.tensor(float(t)), "frame_index": t, "video_index": v, "is_first": t == 0,
              "is_last": t == 2} for v in range(2) for t in range(3)]
    out = list(stepped(method, KeySchedule(3, rotate=True), items, torch.device("cpu"), {0: 1, 1: 3}))
    assert [(item["video_index"], item["frame_index"]) for item, _, is_key, _ in out if is_key] == [(0, 1), (1, 0)]
