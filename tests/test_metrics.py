import math
import shutil

import numpy as np
import pytest
import torch

from reference_metrics import confusion, miou_and_wiou, vc_paper, vc_vspw
from vssbench.benchmark import native
from vssbench.benchmark.metrics import ConfusionMatrix, SegmentationMetrics, VideoConsistency


def _require_kernels():
    """The C kernels, skipping only where there is no C compiler to build them with."""
    compiler = native.compiler()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the accumulators use their torch code")
    kernels = native.kernels()
    assert kernels is not None, f"{compiler} is installed but the C metric kernels did not build"
    return kernels


@pytest.fixture(params=["c", "torch"])
def per_pixel_code(request, monkeypatch):
    """Runs a test on both implementations of the per-pixel work of uint8 maps on a CPU."""
    if request.param == "c":
        _require_kernels()
    else:
        monkeypatch.setenv("VSSBENCH_NATIVE", "0")
    return request.param


def _maps(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.uint8)

# A 2x4 frame with 3 classes. Class 2 is predicted but absent from the ground truth;
# the last column is ignored (255).
TARGET = torch.tensor([[0, 0, 1, 255], [0, 1, 1, 255]])
PREDICTION = torch.tensor([[0, 1, 1, 2], [2, 1, 1, 0]])
# Valid pixels (gt, pred): (0,0) (0,1) (1,1) (0,2) (1,1) (1,1)
#   class 0: TP 1, FN 2 (pred 1, pred 2), FP 0           -> IoU 1/3
#   class 1: TP 3, FN 0, FP 1 (gt 0 pred 1)              -> IoU 3/4
#   class 2: TP 0, FP 1, no ground truth                 -> IoU 0, union 1


@pytest.mark.parametrize("dtype", [torch.long, torch.uint8])
def test_confusion_matrix_by_hand(per_pixel_code, dtype):
    matrix = ConfusionMatrix(3)
    matrix.update(PREDICTION.to(dtype), TARGET.to(dtype))
    assert matrix.matrix.tolist() == [[1, 1, 1], [0, 3, 0], [0, 0, 0]]
    assert matrix.codes_used == {per_pixel_code if dtype == torch.uint8 else "torch"}
    iou = matrix.iou()
    assert iou[0].item() == pytest.approx(1 / 3)
    assert iou[1].item() == pytest.approx(3 / 4)
    assert iou[2].item() == 0.0


def test_miou_modes_differ_on_predicted_but_absent_class():
    matrix = ConfusionMatrix(3)
    matrix.update(PREDICTION, TARGET)
    # vspw: classes with ground truth only (0, 1); mmseg: every class with a non-empty union (0, 1, 2).
    assert matrix.miou("vspw") == pytest.approx((1 / 3 + 3 / 4) / 2)
    assert matrix.miou("mmseg") == pytest.approx((1 / 3 + 3 / 4 + 0) / 3)


def test_wiou_by_hand():
    matrix = ConfusionMatrix(3)
    matrix.update(PREDICTION, TARGET)
    # 3 of 6 valid gt pixels are class 0, 3 are class 1.
    assert matrix.wiou() == pytest.approx(0.5 * (1 / 3) + 0.5 * (3 / 4))


def test_class_absent_everywhere_is_nan_and_not_averaged():
    matrix = ConfusionMatrix(4)
    matrix.update(PREDICTION, TARGET)
    assert math.isnan(matrix.iou()[3].item())
    assert matrix.miou("mmseg") == pytest.approx((1 / 3 + 3 / 4) / 3)


def test_all_ignored_frame_adds_nothing():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255))
    assert matrix.matrix.sum() == 0
    assert math.isnan(matrix.miou())


@pytest.mark.parametrize("dtype", [torch.long, torch.uint8])
def test_classes_out_of_range_are_rejected_and_not_counted(per_pixel_code, dtype):
    matrix = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="target holds a class >= num_classes 2"):
        matrix.update(torch.zeros(1, 3, dtype=dtype), torch.tensor([[0, 5, 255]], dtype=dtype))
    with pytest.raises(ValueError, match="prediction holds a class >= num_classes 2"):
        matrix.update(torch.tensor([[0, 2, 1]], dtype=dtype), torch.tensor([[0, 1, 255]], dtype=dtype))
    assert matrix.matrix.sum() == 0


def test_c_kernels_count_exactly_what_the_torch_code_counts(monkeypatch):
    """124 classes with ignored pixels, three windows, a frame of 97x131 pixels: not a multiple of
    the kernel's four lanes, more than one of its blocks."""
    _require_kernels()
    rng = np.random.default_rng(7)
    videos = []
    for length in (17, 24, 9):
        base = rng.integers(0, 124, (13, 17)).repeat(8, 0).repeat(8, 1)[:97, :131]  # regions of 8x8 pixels
        targets = [np.where(rng.random(base.shape) < 0.01, 255, np.roll(base, t // 3, axis=1)) for t in range(length)]
        predictions = [np.where(rng.random(base.shape) < 0.1, rng.integers(0, 124, base.shape), np.roll(base, t // 2, 1))
                       for t in range(length)]
        videos.append([(_maps(p), _maps(t)) for p, t in zip(predictions, targets)])

    def evaluate() -> SegmentationMetrics:
        metrics = SegmentationMetrics(124, vc_windows=(2, 8, 16))
        for frames in videos:
            for prediction, target in frames:
                metrics.update(prediction, target)
            metrics.end_video()
        return metrics

    with_kernels = evaluate()
    monkeypatch.setenv("VSSBENCH_NATIVE", "0")
    with_torch = evaluate()
    assert torch.equal(with_kernels.confusion.matrix, with_torch.confusion.matrix)
    assert with_kernels.confusion.matrix.sum() > 0.9 * 50 * 97 * 131
    assert with_kernels.consistency.per_video == with_torch.consistency.per_video
    assert all(0.01 < with_kernels.consistency.value(n) < 0.99 for n in (2, 8, 16))  # neither trivial
    assert (with_kernels.per_pixel_code, with_torch.per_pixel_code) == ("c", "torch")
    # Merging shards keeps the record; a shard that counted with each code shows both.
    merged = SegmentationMetrics.merged([with_kernels.state(), with_torch.state()], [[0, 1, 2], [3, 4, 5]], with_torch)
    assert merged.per_pixel_code == "c+torch"


def test_c_kernels_fall_back_to_torch_when_the_compiler_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("VSSBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a compiler that exits 1
    native._load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="C metric kernels are unavailable"):
            assert native.kernels() is None
        matrix = ConfusionMatrix(3)
        matrix.update(PREDICTION.to(torch.uint8), TARGET.to(torch.uint8))
        assert matrix.matrix.tolist() == [[1, 1, 1], [0, 3, 0], [0, 0, 0]]
        assert not list((tmp_path / "native").iterdir())  # no partial library left behind
    finally:
        native._load.cache_clear()


def _feed(accumulator: VideoConsistency, targets, predictions) -> None:
    for target, prediction in zip(targets, predictions):
        accumulator.update(torch.as_tensor(prediction), torch.as_tensor(target))
    accumulator.end_video()


def test_vc_window_score_by_hand():
    # 17 frames of 1x4 pixels (the shortest video VSPW scores). The ground truth changes
    # in pixel 3 at frame 2 only; the prediction flickers in pixel 0 at frame 1 only.
    targets = [np.array([[0, 0, 1, 1]]) for _ in range(17)]
    targets[2] = np.array([[0, 0, 1, 2]])
    predictions = [np.array([[0, 0, 1, 1]]) for _ in range(17)]
    predictions[1] = np.array([[1, 0, 1, 1]])
    vc = VideoConsistency((8,), "vspw")
    _feed(vc, targets, predictions)
    # Windows start at 0..8 (N - n = 9 of them). Windows 0 and 1 contain frame 2 -> G = 3 pixels;
    # windows 0 and 1 contain frame 1 as a later frame or as their start -> pixel 0 unstable in P.
    #   window 0: G = {0,1,2}, P stable = {1,2,3} -> 2/3
    #   window 1: starts at frame 1 (pred pixel 0 = 1, later 0): G = {0,1,2}, P = {1,2,3} -> 2/3
    #   windows 2..8: G = all 4, P = all 4 -> 1
    expected = (2 / 3 + 2 / 3 + 7 * 1) / 9
    assert vc.value(8) == pytest.approx(expected)
    assert vc.score_count[8] == 9


def test_vc_short_video_is_skipped_in_vspw_protocol():
    frames = [np.zeros((2, 2), np.int64)] * 16
    vc = VideoConsistency((8,), "vspw")
    _feed(vc, frames, frames)
    assert vc.score_count[8] == 0 and math.isnan(vc.value(8))
    paper = VideoConsistency((8,), "paper")
    _feed(paper, frames, frames)
    assert paper.value(8) == 1.0 and paper.score_count[8] == 1


def test_vc_video_shorter_than_window_has_no_window_in_paper_protocol():
    frames = [np.zeros((2, 2), np.int64)] * 5
    vc = VideoConsistency((8,), "paper")
    _feed(vc, frames, frames)
    assert math.isnan(vc.value(8))


def test_vc_window_with_no_stable_ground_truth_is_nan_safe():
    # The ground truth alternates 0/1 in every pixel up to frame 8, then stays 0: windows 0..7 contain two
    # consecutive differing frames (|G| = 0, NaN), window 8 (frames 8..15) is stable and scores 1.
    targets = [np.full((1, 2), t % 2 if t < 9 else 0) for t in range(17)]
    vc = VideoConsistency((8,), "vspw")
    _feed(vc, targets, targets)
    assert vc.score_count[8] == 1
    assert vc.value(8) == 1.0


@pytest.mark.parametrize("protocol,reference", [("vspw", vc_vspw), ("paper", vc_paper)])
@pytest.mark.parametrize("n", [8, 16])
def test_vc_matches_reference_implementation_on_random_videos(per_pixel_code, protocol, reference, n):
    rng = np.random.default_rng(n)
    videos = []
    for length in (12, 17, 20, 25):  # shorter than both windows, the shortest scored, longer ones
        base = rng.integers(0, 3, (6, 7))
        targets = [np.where(rng.random(base.shape) < 0.1, rng.integers(0, 3, base.shape), base) for _ in range(length)]
        targets = [np.where(rng.random(base.shape) < 0.05, 255, t) for t in targets]
        predictions = [np.where(rng.random(base.shape) < 0.15, rng.integers(0, 3, base.shape), base)
                       for _ in range(length)]
        videos.append((targets, predictions))
    vc = VideoConsistency((n,), protocol)
    for targets, predictions in videos:
        _feed(vc, [_maps(t) for t in targets], [_maps(p) for p in predictions])
    assert vc.value(n) == pytest.approx(reference(videos, n), rel=1e-12)


def test_segmentation_metrics_match_reference_over_videos(per_pixel_code):
    rng = np.random.default_rng(0)
    metrics = SegmentationMetrics(4)
    videos, all_predictions, all_targets = [], [], []
    for length in (18, 20):
        base = rng.integers(0, 4, (5, 6))
        targets = [np.where(rng.random(base.shape) < 0.05, rng.integers(0, 4, base.shape), base) for _ in range(length)]
        targets = [np.where(rng.random(t.shape) < 0.05, 255, t) for t in targets]
        predictions = [np.where(rng.random(t.shape) < 0.97, np.where(t == 255, 0, t), rng.integers(0, 4, t.shape))
                       for t in targets]
        for target, prediction in zip(targets, predictions):
            metrics.update(_maps(prediction), _maps(target))
        metrics.end_video()
        videos.append((targets, predictions))
        all_predictions += predictions
        all_targets += targets
    summary = metrics.summary(("a", "b", "c", "d"))
    miou, wiou, iou = miou_and_wiou(confusion(all_predictions, all_targets, 4), "vspw")
    assert summary["miou"] == pytest.approx(100 * miou, abs=1e-4)
    assert summary["wiou"] == pytest.approx(100 * wiou, abs=1e-4)
    assert 0 < summary["mvc8"] < 100 and 0 < summary["mvc16"] < 100
    assert summary["mvc8"] == pytest.approx(100 * vc_vspw(videos, 8), abs=1e-4)
    assert summary["mvc16"] == pytest.approx(100 * vc_vspw(videos, 16), abs=1e-4)
    assert summary["per_class_iou"]["c"] == pytest.approx(100 * iou[2], abs=1e-4)
    assert summary["frames_evaluated"] == 38 and summary["videos"] == 2
    assert summary["miou_mode"] == "vspw" and summary["vc_protocol"] == "vspw"
