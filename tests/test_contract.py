"""The command line's contract: nothing lost under concurrency, one exit-code rule, outputs checked first.

Exit codes: 0 success, 1 some rows or checks failed, 2 bad input (arguments, data, checkpoints,
unwritable outputs, unreadable result files), 130 on Ctrl-C; no traceback for any of them.
"""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vssbench import cli
from vssbench.benchmark.results import ResultFile, load_rows
from vssbench.cli import main
from vssbench.datasets.cityscapes import CityscapesDataset

HERE = Path(__file__).parent


def _write_rows(path: str, writer: int, count: int) -> None:
    results = ResultFile(path)
    for index in range(count):
        results.put({"label": f"w{writer}-{index}", "config_hash": f"{writer}-{index}", "status": "ok"})


def test_concurrent_writers_of_one_file_keep_every_row_exactly_once(tmp_path):
    path = tmp_path / "rows.jsonl"
    ResultFile(path).put({"label": "before", "config_hash": "before", "status": "ok"})
    processes = [multiprocessing.get_context("spawn").Process(target=_write_rows, args=(str(path), writer, 25))
                 for writer in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * 4
    hashes = [row["config_hash"] for row in load_rows(path)]
    assert sorted(hashes) == sorted(["before"] + [f"{w}-{i}" for w in range(4) for i in range(25)])


def _bench(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """``bench`` in a child process, with SIGINT at its default: a test suite started in the background
    (``cmd &``) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "vssbench", *args], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def test_three_concurrent_bench_runs_on_one_output_keep_every_row(small_synthetic, tmp_path):
    cache, output = tmp_path / "cache", tmp_path / "run.jsonl"
    common = ["run", "--methods", "copy", "--data-root", str(small_synthetic), "--max-videos", "1", "--train-iters", "2",
              "--cache-dir", str(cache), "--num-workers", "0", "--speed-rounds", "0", "--quiet", "--output", str(output)]
    assert main(common + ["--intervals", "1"]) == 0  # trains the shared checkpoint once
    runs = [_bench(*common, "--intervals", intervals) for intervals in ("2,3", "4,5", "6,7")]
    assert [run.wait(240) for run in runs] == [0, 0, 0], [run.stderr.read() for run in runs]
    labels = sorted(row["label"] for row in load_rows(output))
    assert labels == sorted(f"copy_segformer-tiny_k{k}" for k in range(1, 8))


def test_ctrl_c_exits_130_saying_what_was_kept_without_a_traceback(small_synthetic, tmp_path):
    output = tmp_path / "run.jsonl"
    run = _bench("run", "--methods", "copy", "--intervals", ",".join(map(str, range(1, 40))), "--data-root",
                 str(small_synthetic), "--train-iters", "2", "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0",
                 "--speed-rounds", "0", "--output", str(output))
    deadline = time.time() + 120
    while time.time() < deadline and len(load_rows(output, skip_unreadable=True)) < 2:
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(60)
    assert run.returncode == 130
    assert "Traceback" not in stderr
    kept = len(load_rows(output))
    assert kept >= 2
    assert (f"bench run: interrupted; {kept} finished rows are in {output} (every row is written as soon as it is "
            "done); the same command computes only the rest") in stderr


def test_debug_shows_the_traceback_of_bad_input(tmp_path, capsys):
    missing = tmp_path / "none.jsonl"
    assert main(["check", str(missing), "--baseline", str(missing)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "check", str(missing), "--baseline", str(missing)]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_corrupt_line_in_the_output_is_bad_input_and_the_file_is_left_alone(small_synthetic, tmp_path, capsys):
    output = tmp_path / "run.jsonl"
    output.write_text('{"label": "a", "config_hash": "x", "status": "ok"}\n{not json\n')
    before = output.read_text()
    run = ["run", "--methods", "copy", "--intervals", "1", "--data-root", str(small_synthetic), "--max-videos", "1",
           "--train-iters", "2", "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--speed-rounds", "0",
           "--output", str(output)]
    assert main(run) == 2
    error = capsys.readouterr().err
    assert f"{output}:2 is not a result row" in error and "--overwrite" in error and "Traceback" not in error
    assert output.read_text() == before
    assert main([*run, "--overwrite"]) == 0  # drops the unreadable line, keeps the readable row
    assert sorted(row["label"] for row in load_rows(output)) == ["a", "copy_segformer-tiny_k1"]


@pytest.mark.parametrize("argv, option", [
    (["run", "--methods", "copy", "--output", "{blocked}/run.jsonl"], "--output"),
    (["run", "--methods", "copy", "--save-predictions", "{blocked}/predictions"], "--save-predictions"),
    (["run", "--methods", "copy", "--cache-dir", "{blocked}/cache"], "--cache-dir"),
    (["train", "--method", "perframe:segformer-tiny", "--out", "{blocked}/model.pt"], "--out"),
    (["profile", "--methods", "copy", "--output", "{blocked}/profile.jsonl"], "--output"),
    (["profile", "--fidelity", "--report-dir", "{blocked}/reports"], "--report-dir"),
    (["data", "synthetic", "--out", "{blocked}/data"], "--out"),
])
def test_an_unwritable_output_is_bad_input_before_any_work(argv, option, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"  # a path under a regular file cannot be created, whoever runs the test
    blocker.write_text("")
    monkeypatch.setattr("vssbench.datasets.select.open_dataset",
                        lambda *_: pytest.fail("the dataset was loaded before the check"))
    assert main([part.format(blocked=blocker) for part in argv]) == 2
    error = capsys.readouterr().err
    assert f"{option} {blocker}/" in error and "cannot write there" in error


def test_report_out_that_cannot_be_written_names_the_option(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"label": "a", "status": "ok"}) + "\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["report", str(rows), "--out", str(blocker / "report")]) == 2
    assert f"--out {blocker}/report: cannot write there" in capsys.readouterr().err


def test_a_split_list_naming_a_video_twice_is_bad_input(small_synthetic, tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    (root / "data").symlink_to(small_synthetic / "data")
    (root / "meta.json").write_text((small_synthetic / "meta.json").read_text())
    names = (small_synthetic / "val.txt").read_text().split()
    (root / "val.txt").write_text("\n".join([names[0], "", names[0]]) + "\n")
    assert main(["run", "--methods", "copy", "--data-root", str(root), "--output", str(tmp_path / "r.jsonl")]) == 2
    assert f"split list {root / 'val.txt'} names video '{names[0]}' twice (lines 1 and 3)" in capsys.readouterr().err


def _cityscapes(root: Path, labelled: int) -> Path:
    sequence, labels = root / "leftImg8bit_sequence/val/aachen", root / "gtFine/val/aachen"
    sequence.mkdir(parents=True)
    labels.mkdir(parents=True)
    for frame in range(30):
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(sequence / f"aachen_000001_{frame:06d}_leftImg8bit.png")
    Image.fromarray(np.full((8, 16), 7, np.uint8)).save(labels / f"aachen_000001_{labelled:06d}_gtFine_labelIds.png")
    return labels


def test_cityscapes_skips_stray_files_with_a_warning_and_names_a_label_too_close_to_the_start(tmp_path, caplog):
    labels = _cityscapes(tmp_path / "good", 19)
    Image.fromarray(np.full((8, 16), 7, np.uint8)).save(labels / "extra_gtFine_labelIds.png")
    (video,) = CityscapesDataset.from_root(tmp_path / "good", "val").videos
    assert video.name == "aachen_000001_000019"
    assert "skipped 1 file(s) not named <city>_<seq>_<frame>_..." in caplog.text
    assert "extra_gtFine_labelIds.png" in caplog.text
    _cityscapes(tmp_path / "early", 5)
    with pytest.raises(cli.DatasetError, match="is frame 5 of aachen_000001: its snippet would start 14 frames before"):
        CityscapesDataset.from_root(tmp_path / "early", "val")


def test_version_and_a_list_that_fits_80_columns(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("vssbench ")
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert max(map(len, listing.splitlines())) <= 80
    assert "mpvss     tiny* +6" in listing and "query-based-flow* +5" in listing
    assert main(["list", "--verbose"]) == 0
    assert "query-random" in capsys.readouterr().out


def test_result_files_and_checkpoints_get_the_users_umask(tmp_path):
    """Both are written atomically (a temporary file renamed), which must not leave them 0600."""
    from vssbench.methods.base import build_method
    from vssbench.methods.weights import save_checkpoint

    method = build_method("perframe:segformer-tiny", 3)
    previous = os.umask(0o027)
    try:
        ResultFile(tmp_path / "rows.jsonl").put({"label": "a", "config_hash": "a", "status": "ok"})
        save_checkpoint(method, tmp_path / "weights.pt")
    finally:
        os.umask(previous)
    assert (tmp_path / "rows.jsonl").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "weights.pt").stat().st_mode & 0o777 == 0o640


def test_help_does_not_import_torch():
    code = "import sys, vssbench.cli; vssbench.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
