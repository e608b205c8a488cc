"""--shipped-weights: rows evaluate the shipped file and say so, nothing trains; what is not shipped, a
changed file or a conflicting flag is bad input; the tensor digest sees one changed value and nothing
else."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vssbench.benchmark import shipped
from vssbench.benchmark.results import load_rows
from vssbench.cli import main
from vssbench.methods.base import build_method
from vssbench.methods.weights import file_sha256, save_checkpoint


@pytest.fixture
def shipped_folder(small_synthetic, tmp_path, monkeypatch):
    """A shipped folder holding one segformer-tiny trained 2 iterations on the small synthetic set."""
    cache = tmp_path / "train-cache"
    assert main(["run", "--methods", "perframe", "--intervals", "1", "--data-root", str(small_synthetic),
                 "--cache-dir", str(cache), "--train-iters", "2", "--speed-rounds", "0", "--num-workers", "0",
                 "--output", str(tmp_path / "train.jsonl")]) == 0
    trained = next(cache.rglob("perframe-segformer-tiny-*.pt"))
    folder = tmp_path / "shipped"
    folder.mkdir()
    shutil.copyfile(trained, folder / trained.name)
    state = torch.load(trained, weights_only=True)["state_dict"]
    (folder / "manifest.json").write_text(json.dumps({
        "dataset": load_rows(tmp_path / "train.jsonl")[0]["dataset"],
        "trained_by": {"command": "the test's bench run", "commit": "0" * 40, "torch": torch.__version__, "threads": [2]},
        "files": [{"file": trained.name, "sha256": file_sha256(trained), "tensors_sha256": shipped.tensors_sha256(state),
                   "serves": ["perframe:segformer-tiny"], "seed": 0}]}))
    monkeypatch.setattr(shipped, "FOLDER", folder)
    return folder / trained.name


def _run(small_synthetic, tmp_path, *extra: str) -> int:
    return main(["run", "--intervals", "1,5", "--data-root", str(small_synthetic), "--cache-dir", str(tmp_path / "empty"),
                 "--speed-rounds", "0", "--num-workers", "0", "--output", str(tmp_path / "rows.jsonl"), "--shipped-weights",
                 *extra])


def test_rows_name_the_shipped_file_and_nothing_trains(shipped_folder, small_synthetic, tmp_path, capsys):
    assert _run(small_synthetic, tmp_path, "--methods", "perframe,copy") == 0
    rows = load_rows(tmp_path / "rows.jsonl")
    assert [r["label"] for r in rows] == ["perframe_segformer-tiny_k1", "copy_segformer-tiny_k1", "copy_segformer-tiny_k5"]
    for row in rows:
        assert row["checkpoint"]["path"] == str(shipped_folder)
        assert row["checkpoint"]["sha256"] == file_sha256(shipped_folder)
        assert row["checkpoint"]["shipped"]["command"] == "the test's bench run"
        assert row["checkpoint"]["declared"]["training"]["iterations"] == 2
    assert not list((tmp_path / "empty").rglob("*.pt"))  # the cache stays empty: nothing trained
    assert "before its first row" not in capsys.readouterr().out


def test_what_is_not_shipped_a_changed_file_or_a_conflict_is_bad_input(shipped_folder, small_synthetic, tmp_path,
                                                                        capsys):
    assert _run(small_synthetic, tmp_path, "--methods", "tfc") == 2
    assert "ships no weights for tfc:tiny (sparse-msda-0.8) at seed 0; it ships perframe:segformer-tiny (seed 0)" \
        in capsys.readouterr().err
    assert _run(small_synthetic, tmp_path, "--methods", "perframe", "--train-iters", "5") == 2
    assert "none of --train-iters" in capsys.readouterr().err
    with open(shipped_folder, "ab") as handle:
        handle.write(b"\0")
    shipped.manifest.cache_clear()
    assert _run(small_synthetic, tmp_path, "--methods", "perframe") == 2
    assert "differs from its manifest's sha256" in capsys.readouterr().err
    assert not (tmp_path / "rows.jsonl").exists()


def test_the_tensor_digest_sees_one_value_and_ignores_the_record(tmp_path):
    torch.manual_seed(0)
    method = build_method("perframe:segformer-tiny", 8)
    first = save_checkpoint(method, tmp_path / "a.pt", {"dataset_root": "/one/place"})
    second = save_checkpoint(method, tmp_path / "b.pt", {"dataset_root": "/another"})
    digest = [shipped.tensors_sha256(torch.load(p, weights_only=True)["state_dict"]) for p in (first, second)]
    assert digest[0] == digest[1] and file_sha256(first) != file_sha256(second)
    with torch.no_grad():
        next(method.parameters()).view(-1)[0] += 1e-6
    changed = save_checkpoint(method, tmp_path / "c.pt", {"dataset_root": "/one/place"})
    assert shipped.tensors_sha256(torch.load(changed, weights_only=True)["state_dict"]) != digest[0]
