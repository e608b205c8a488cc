"""Progress reaches a log: lines to a non-terminal, none with --quiet, for training, sweeps and profiling."""

import logging

import pytest

from vssbench import progress as progress_module
from vssbench.cli import build_parser, main
from vssbench.progress import Progress


@pytest.fixture(autouse=True)
def not_quiet():
    yield
    progress_module.set_quiet(False)


def test_a_log_gets_a_line_every_few_seconds_with_the_count_rate_and_time_left(caplog, monkeypatch):
    clock = iter([0.0, 1.0, 4.0, 12.0, 13.0])  # the start, then one reading per update
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    caplog.set_level(logging.INFO, "vssbench")
    with Progress(4, "training x", every=10.0) as progress:  # pytest's stderr is not a terminal: lines, no bar
        for _ in range(4):
            progress.update(loss=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["training x: 3/4 it (75%), 0.25 it/s, 4s left; loss 0.5",  # 10 s after the start
                     "training x: 4/4 it (100%), 0.308 it/s, 0s left; loss 0.5"]  # and at the end


def test_quiet_turns_every_line_off(caplog):
    caplog.set_level(logging.INFO, "vssbench")
    progress_module.set_quiet(True)
    with Progress(2, "sweep", every=0) as progress:
        progress.update()
        progress.update()
    assert not caplog.records


@pytest.mark.parametrize("argv", [["--quiet", "list"], ["list", "--quiet"], ["-q", "list"], ["list", "-q"]])
def test_quiet_goes_before_or_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).quiet is True
    assert build_parser().parse_args(["list"]).quiet is False


def test_a_sweep_and_a_profile_print_progress_lines_and_none_with_quiet(small_synthetic, tmp_path, caplog):
    caplog.set_level(logging.INFO, "vssbench")
    run = ["run", "--methods", "copy", "--intervals", "1,2", "--data-root", str(small_synthetic), "--max-videos", "1",
           "--train-iters", "2", "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--speed-rounds", "0"]
    assert main([*run, "--output", str(tmp_path / "a.jsonl")]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("training perframe:segformer-tiny: 2/2 it (100%)") for m in messages)
    assert any(m.startswith("copy:segformer-tiny k=2: ") and " frame/s" in m for m in messages)
    assert any(m.startswith("sweep: 2/2 row (100%)") for m in messages)
    assert main(["profile", "--methods", "copy", "--resolution", "32x48", "--intervals", "1,2", "--repeats", "1",
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    assert any(r.getMessage().startswith("profiling copy_segformer-tiny: 4/4 step (100%)") for r in caplog.records)
    caplog.clear()
    assert main(["--quiet", *run, "--output", str(tmp_path / "b.jsonl"), "--overwrite"]) == 0
    assert not [r for r in caplog.records if "%)" in r.getMessage()]
