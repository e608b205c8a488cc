"""TC against a transcription of VSPW's TC_cal.py (tests/reference_tc.py) on synthetic predictions and flows."""

import math

import numpy as np
import pytest
import torch

from reference_tc import tc as reference_tc
from vssbench.benchmark.tc import TemporalConsistency, flow_size, raft_flow, warp_back
from vssbench.methods.raft import RAFT


def _videos(seed: int, count: int, frames: int, size: tuple[int, int], classes: int) -> tuple[list, list]:
    """Blocky predictions that drift between frames, and flows (float32) with sub-pixel and large motions,
    some leaving the frame."""
    rng = np.random.default_rng(seed)
    videos, flows = [], []
    for _ in range(count):
        blocks = rng.integers(0, classes, (size[0] // 4 + 2, size[1] // 4 + 2))
        video = []
        for t in range(frames):
            big = np.kron(blocks, np.ones((4, 4), np.int64))
            video.append(big[t % 3:t % 3 + size[0], t:t + size[1]].astype(np.uint8))
            if rng.random() < 0.5:
                blocks[rng.integers(0, blocks.shape[0]), rng.integers(0, blocks.shape[1])] = rng.integers(0, classes)
        videos.append(video)
        flows.append([torch.from_numpy(rng.normal(0, 3, (1, 2, *size)).astype(np.float32)) for _ in range(frames - 1)])
    return videos, flows


@pytest.mark.parametrize("size", [(24, 32), (23, 37)])
@pytest.mark.parametrize("first", [100, 2])
def test_tc_equals_the_transcription_of_tc_cal(size, first):
    classes = 6
    videos, flows = _videos(0, 4, 5, size, classes)
    given = {}

    def flow(image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:  # the flows the script would get
        return given["next"]

    tc = TemporalConsistency(classes, flow, videos=first)
    for v, video in enumerate(videos):
        for t, prediction in enumerate(video):
            if t:
                given["next"] = flows[v][t - 1]
            tc.update(torch.zeros(*size, 3, dtype=torch.uint8), torch.from_numpy(prediction).long(), v, t)
        tc.end_video()
    expected = reference_tc(videos, flows, classes, first=first)
    assert abs(tc.value() - expected) < 1e-9
    assert tc.pairs == min(first, 4) * 4
    assert 0.05 < expected < 0.95  # neither trivial nor degenerate


def test_zero_flow_still_shifts_by_the_scripts_normalisation_and_out_of_frame_reads_class_0():
    """W - 1 normalisation under align_corners=False: the last column and row of an even-sized frame sample
    at W - 1/2 and H - 1/2, rounded outside (class 0) even without motion; a flow leaving the frame reads 0."""
    prediction = torch.full((4, 6), 3, dtype=torch.long)
    warped = warp_back(prediction, torch.zeros(1, 2, 4, 6))
    assert (warped[:-1, :-1] == 3).all() and (warped[-1] == 0).all() and (warped[:, -1] == 0).all()
    away = torch.zeros(1, 2, 4, 6)
    away[:, 0] = 100.0
    assert (warp_back(prediction, away) == 0).all()


def test_pairs_are_consecutive_frames_of_one_video_and_no_pair_is_nan():
    calls = []
    tc = TemporalConsistency(3, lambda a, b: calls.append(1) or torch.zeros(1, 2, 4, 4))
    label = torch.zeros(4, 4, dtype=torch.long)
    image = torch.zeros(4, 4, 3, dtype=torch.uint8)
    tc.update(image, label, video=0, frame=0)
    assert math.isnan(tc.value())
    tc.update(image, label, video=0, frame=2)  # frame 1 unlabelled: no pair
    tc.update(image, label, video=1, frame=3)  # another video: no pair
    tc.update(image, label, video=1, frame=4)
    assert (tc.pairs, len(calls)) == (1, 1)
    tc.update(image, label, video=150, frame=0)
    tc.update(image, label, video=150, frame=1)  # beyond the first 100 videos
    assert tc.pairs == 1


@pytest.mark.parametrize("size", [(130, 141), (61, 90)])
def test_raft_flow_returns_a_finite_flow_of_the_frames_size(size):
    """130 x 141 is padded to 136 x 144; 61 x 90 would leave RAFT a one-pixel coarsest level (NaN flows, in
    the official code too) and is scaled to 128 x 192 for the flow."""
    torch.manual_seed(0)
    model = RAFT("small").eval()
    frames = [torch.randint(0, 256, (*size, 3), dtype=torch.uint8) for _ in range(2)]
    with torch.no_grad():
        assert not torch.isfinite(model(*(torch.zeros(1, 3, 64, 96),) * 2, iters=1)[1]).all()
    assert flow_size(*size) == ((130, 141) if size[0] == 130 else (128, 192))
    out = raft_flow(model, iterations=2)(*frames)
    assert out.shape == (1, 2, *size) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- bench run --metrics tc


@pytest.fixture(scope="module")
def tc_run(small_synthetic, tmp_path_factory):
    """`bench run --methods perframe,copy --intervals 1,5 --metrics tc --random-weights`, 2 RAFT iterations."""
    from vssbench.cli import main

    out = tmp_path_factory.mktemp("tc") / "rows.jsonl"
    code = main(["-q", "run", "--methods", "perframe,copy", "--intervals", "1,5", "--metrics", "tc", "--random-weights",
                 "--tc-iters", "2", "--data-root", str(small_synthetic), "--output", str(out), "--speed-rounds", "0"])
    return code, out


def test_a_run_with_tc_writes_it_in_every_row_with_its_protocol_and_the_report_shows_it(tc_run, tmp_path):
    from vssbench.benchmark.report import write_report
    from vssbench.benchmark.results import load_rows

    code, out = tc_run
    rows = load_rows(out)
    assert code == 0 and len(rows) == 3
    for row in rows:
        metrics = row["metrics"]
        assert isinstance(metrics["tc"], float) and metrics["tc_pairs"] == 2 * 19  # 2 videos of 20 labelled frames
        assert metrics["tc_protocol"] == {"flow": {"random": True, "size": "large", "seed": 0}, "iterations": 2,
                                          "videos": 100, "flow_size": "128x192 (scaled up)"}
    perframe, copy_k1 = (next(r for r in rows if r["label"] == label)
                         for label in ("perframe_segformer-tiny_k1", "copy_segformer-tiny_k1"))
    assert perframe["metrics"]["tc"] == copy_k1["metrics"]["tc"]  # the same predictions at k = 1
    write_report([out], tmp_path / "report")
    (table,) = [path.read_text() for path in (tmp_path / "report").glob("comparison_*.md")]
    assert "| TC" in table and "a TC marked (random RAFT) is computed with a random RAFT (--random-weights)" in table
    assert all(f"{row['metrics']['tc']:.2f} (random RAFT)" in table for row in rows)


def test_tc_settings_enter_the_configuration_hash_only_when_asked(tc_run, small_synthetic, tmp_path):
    from vssbench.benchmark.results import load_rows
    from vssbench.cli import main

    out = tmp_path / "rows.jsonl"
    assert main(["-q", "run", "--methods", "copy", "--intervals", "5", "--random-weights", "--data-root",
                 str(small_synthetic), "--output", str(out), "--speed-rounds", "0"]) == 0
    (plain,) = load_rows(out)
    with_tc = next(r for r in load_rows(tc_run[1]) if r["label"] == plain["label"])
    assert "tc" not in plain["metrics"] and plain["config_hash"] != with_tc["config_hash"]
    assert plain["metrics"]["miou"] == with_tc["metrics"]["miou"]  # TC changes nothing else


def test_tc_with_raft_weights_records_the_file_and_its_layout(small_synthetic, tmp_path):
    """princeton-vl's layout (the RAFT-small golden weights of tests/test_raft.py)."""
    import hashlib
    import importlib.util
    import json
    from pathlib import Path

    from vssbench.benchmark.results import load_rows
    from vssbench.cli import main

    spec = importlib.util.spec_from_file_location("golden_raft", Path(__file__).parents[1] / "scripts" / "golden_raft.py")
    golden_raft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden_raft)
    keys = json.loads((Path(__file__).parent / "golden" / "raft" / "princeton_small" / "keys.json").read_text())
    path = tmp_path / "raft-small.pth"
    torch.save({f"module.{k}": v.float() if v.is_floating_point() else v
                for k, v in golden_raft.golden_state(keys, 2).items()}, path)
    out = tmp_path / "rows.jsonl"
    assert main(["-q", "run", "--methods", "copy", "--intervals", "5", "--metrics", "tc", "--tc-flow", str(path),
                 "--tc-iters", "1", "--tc-videos", "1", "--random-weights", "--data-root", str(small_synthetic),
                 "--output", str(out), "--speed-rounds", "0"]) == 0
    (row,) = load_rows(out)
    assert row["metrics"]["tc_protocol"]["flow"] == {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                                     "layout": "princeton-vl", "size": "small"}
    assert row["metrics"]["tc_pairs"] == 19 and row["metrics"]["tc_protocol"]["videos"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--metrics", "tc"], "--metrics tc needs RAFT weights for its flow: --tc-flow PATH"),
    (["--metrics", "tc", "--tc-flow", "missing.pth"], "--tc-flow missing.pth: no such file"),
    (["--metrics", "flicker", "--random-weights"], "--metrics flicker: unknown flicker; expected tc"),
    (["--tc-flow", "raft.pth", "--random-weights"], "--tc-flow: only with --metrics tc"),
    (["--metrics", "tc", "--random-weights", "--tc-videos", "none"], "--tc-videos 'none'"),
    (["--metrics", "tc", "--random-weights", "--tc-videos", "5,6"], "--tc-videos '5,6': expected one positive"),
])
def test_tc_without_flow_weights_or_with_bad_arguments_exits_2(small_synthetic, tmp_path, capsys, argv, message):
    from vssbench.cli import main

    assert main(["run", "--methods", "copy", "--data-root", str(small_synthetic), "--output",
                 str(tmp_path / "rows.jsonl"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "rows.jsonl").exists()


def test_check_compares_tc_where_the_baseline_has_it_and_never_a_random_rafts(tc_run):
    import copy

    from vssbench.benchmark.regression import check
    from vssbench.benchmark.results import load_rows

    baseline = load_rows(tc_run[1])
    trained = copy.deepcopy(baseline)
    for row in trained:  # as if scored with trained RAFT weights
        row["weights"] = "trained"
        row["metrics"]["tc_protocol"]["flow"] = {"file": "raft-things.pth", "sha256": "ab", "layout": "princeton-vl",
                                                 "size": "large"}
    dropped = copy.deepcopy(trained)
    dropped[0]["metrics"]["tc"] -= 1.0
    (regression,) = check(dropped, trained).regressions
    assert regression.startswith(f"{dropped[0]['label']}: tc ") and "tolerance 0.5 points" in regression
    random_flow = copy.deepcopy(baseline)  # the methods' weights trained, RAFT's random: TC is not compared
    for row in random_flow:
        row["weights"] = "trained"
    lowered = copy.deepcopy(random_flow)
    lowered[0]["metrics"]["tc"] -= 1.0
    assert check(lowered, random_flow).passed
