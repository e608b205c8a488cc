"""bench run's plan: --dry-run lists rows, trainings and the cache without training; a run announces
what it trains before its first row; the plan names exactly the files training writes; --figure draws
the run's rows and names the file last."""

from __future__ import annotations

import pytest

from vssbench.benchmark.plan import PlannedTraining, RunPlan, duration, estimate_seconds, training_lines
from vssbench.cli import main


def _run(small_synthetic, cache, tmp_path, *extra: str) -> int:
    return main(["run", "--methods", "perframe,tfc", "--intervals", "1,5", "--data-root", str(small_synthetic),
                 "--cache-dir", str(cache), "--output", str(tmp_path / "rows.jsonl"), "--num-workers", "0",
                 "--speed-rounds", "0", "--train-iters", "2", "--stage-iters", "2", *extra])


def test_dry_run_on_an_empty_cache_lists_what_it_would_train_and_trains_nothing(small_synthetic, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _run(small_synthetic, cache, tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "3 row(s): perframe_segformer-tiny_k1, tfc_tiny_k1, tfc_tiny_k5" in out
    assert "before its first row this run trains 2 model(s) on synthetic-" in out
    assert "perframe:segformer-tiny" in out and "tfc:tiny (sparse-msda-0.8)" in out
    assert "2 iterations" in out and "cached:" not in out
    assert not list(cache.rglob("*.pt")) and not (tmp_path / "rows.jsonl").exists()
    assert _run(small_synthetic, cache, tmp_path, "--dry-run", "--figure", str(tmp_path / "fig.svg")) == 2


def test_a_run_announces_its_training_and_the_plan_names_the_files_it_writes(small_synthetic, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _run(small_synthetic, cache, tmp_path, "--figure", str(tmp_path / "fig.png")) == 0
    out = capsys.readouterr().out
    assert out.startswith("before its first row this run trains 2 model(s)")
    assert out.rstrip().splitlines()[-1] == f"figure, mIoU against GFLOPs: {tmp_path / 'fig.png'}"
    assert (tmp_path / "fig.png").stat().st_size > 10_000 and (tmp_path / "fig.pdf").is_file()
    written = sorted(p.name for p in cache.rglob("*.pt"))
    assert len(written) == 2
    assert _run(small_synthetic, cache, tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "trains nothing" in out and "before its first row" not in out
    cached = out.split("cached: ")[1]
    assert all(name in cached for name in written)  # the plan's names are training's names
    assert _run(small_synthetic, cache, tmp_path, "--stage-iters", "3", "--dry-run") == 0
    out = capsys.readouterr().out  # another stage schedule: the segmentor stays cached, the stage trains
    assert "trains 1 model(s)" in out and "tfc:tiny (sparse-msda-0.8)" in out.split("cached:")[0]


def test_estimates_scale_with_this_machine_and_say_when_unmeasured():
    known = PlannedTraining("perframe:segformer-tiny", 1800, None, False)
    unknown = PlannedTraining("perframe:segformer-b5", 10, None, False)
    assert estimate_seconds(known, 2.0) == pytest.approx(2 * estimate_seconds(known, 1.0))
    assert estimate_seconds(unknown, 1.0) is None
    lines = training_lines(RunPlan(["a"], [known, unknown]), 1.0, "synthetic/train")
    assert "for the ones measured" in lines[0] and lines[2].endswith("time unknown (not measured)")
    assert [duration(s) for s in (3, 44, 200, 3900)] == ["5 s", "45 s", "3 min", "1 h 05 min"]
