"""Several processes (gloo on CPU), interrupted sweeps, and bad output paths."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from quiet import QUIET
from ranks import on_ranks
from vssbench.benchmark.results import load_rows
from vssbench.benchmark.runner import EvaluationOptions, evaluate
from vssbench.benchmark.training import train
from vssbench.methods.weights import load_weights, save_checkpoint
from vssbench.cli import main
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import KeySchedule, build_method

PROCESSES = 2


def _evaluate(checkpoint: Path, root: Path):
    method = build_method("copy:segformer-tiny", 8)
    load_weights(method, checkpoint)
    return evaluate(method, load_synthetic(root, "val"), KeySchedule(2), EvaluationOptions(progress=False))


def _evaluated(checkpoint: Path, root: Path) -> dict:
    evaluation = _evaluate(checkpoint, root)
    return {"metrics": evaluation.metrics, "frames": evaluation.frames}


def _trained(root: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(100 + dist.get_rank())  # different initial weights: DDP must broadcast rank 0's
    method = build_method("perframe:segformer-tiny", 8)
    train(method, load_synthetic(root, "train"), iterations=3, options=QUIET)
    return method.state_dict()


@pytest.fixture(scope="module")
def trained_checkpoint(small_synthetic, tmp_path_factory) -> Path:
    method = build_method("perframe:segformer-tiny", 8)
    train(method, load_synthetic(small_synthetic, "train"), iterations=40, options=QUIET)
    path = tmp_path_factory.mktemp("ckpt") / "copy.pt"
    copy = build_method("copy:segformer-tiny", 8)
    copy.segmentor.load_state_dict(method.segmentor.state_dict())
    return save_checkpoint(copy, path)


def test_two_process_evaluation_equals_one_process(trained_checkpoint, small_synthetic, tmp_path):
    shards = on_ranks(_evaluated, (trained_checkpoint, small_synthetic), tmp_path, PROCESSES)
    single = _evaluate(trained_checkpoint, small_synthetic)
    assert 10 < single.metrics["miou"] < 100 and single.metrics["mvc8"] is not None
    for shard in shards:
        assert shard["metrics"] == single.metrics  # every value, per-class IoU and VC included, exactly
        assert shard["frames"] == single.frames


def test_two_process_ddp_training_ends_with_identical_weights(small_synthetic, tmp_path):
    first, second = on_ranks(_trained, (small_synthetic,), tmp_path, PROCESSES)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(100)
    untrained = build_method("perframe:segformer-tiny", 8).state_dict()
    assert any(not torch.equal(first[k], untrained[k]) for k in first if first[k].is_floating_point())


def _run_command(checkpoint: Path, root: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "vssbench", "run", "--methods", "copy:segformer-tiny", "--intervals", "1,2,3,4,5,6",
            "--checkpoint", str(checkpoint), "--data-root", str(root), "--output", str(output)]


def test_a_killed_sweep_resumes_to_exactly_the_rows_of_an_uninterrupted_run(trained_checkpoint, small_synthetic,
                                                                          tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    complete = tmp_path / "complete.jsonl"
    subprocess.run(_run_command(trained_checkpoint, small_synthetic, complete), env=environment, check=True,
                   capture_output=True)
    interrupted = tmp_path / "interrupted.jsonl"
    process = subprocess.Popen(_run_command(trained_checkpoint, small_synthetic, interrupted), env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and len(load_rows(interrupted)) < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(load_rows(interrupted))
    assert 2 <= finished_before < 6, "the kill should land mid-sweep"
    subprocess.run(_run_command(trained_checkpoint, small_synthetic, interrupted), env=environment, check=True,
                   capture_output=True)
    resumed, reference = load_rows(interrupted), load_rows(complete)
    assert [r["label"] for r in resumed] == [r["label"] for r in reference]  # each row once, in order
    assert [r["metrics"] for r in resumed] == [r["metrics"] for r in reference]
    assert [r["config_hash"] for r in resumed] == [r["config_hash"] for r in reference]


def test_an_unwritable_output_path_fails_before_any_work(small_synthetic, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "--methods", "copy", "--data-root", str(small_synthetic), "--output", str(blocker / "rows.jsonl")])
    assert code == 2
    assert f"--output {blocker / 'rows.jsonl'}: cannot write there" in capsys.readouterr().err


def test_an_unknown_variant_lists_the_valid_ones(small_synthetic, tmp_path, capsys):
    code = main(["run", "--methods", "mpvss:tiny", "--variants", "flowy", "--data-root", str(small_synthetic),
                 "--output", str(tmp_path / "rows.jsonl")])
    assert code == 2
    assert "unknown variant 'flowy' for mpvss:tiny; valid variants ('default' names each method's first): " \
        "mpvss:tiny: query-based-flow" in capsys.readouterr().err
