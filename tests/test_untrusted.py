"""Checkpoints and data folders crafted as an attacker would: each is bad input (exit 2, a message naming
the file), writes nothing outside the paths named, runs no code, and stays within a memory bound.

Every payload is generated here; none is committed. The cases that could crash the process or take
gigabytes if a check regressed run in a child process with a time limit, which reports its peak memory.
"""

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_weights import _saved_hf

from vssbench.benchmark.results import load_rows
from vssbench.cli import main
from vssbench.methods.base import build_method
from vssbench.methods.weights import save_checkpoint

MARKER = "vssbench-payload-ran"


def _run(tmp_path: Path, root: Path, *extra: str, dataset: str = "vspw") -> list[str]:
    return ["run", "--methods", "perframe:segformer-tiny", "--dataset", dataset, "--data-root", str(root),
            "--output", str(tmp_path / "rows.jsonl"), "--num-workers", "0", "--speed-rounds", "0", *extra]


def _bad_input(argv: list[str], capsys, *expected: str) -> str:
    """``bench ARGV`` exits 2 with an error line naming each of ``expected`` and no traceback."""
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    for text in expected:
        assert text in error, error
    return error


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def vspw(small_synthetic: Path, tmp_path: Path) -> Path:
    root = tmp_path / "vspw"
    shutil.copytree(small_synthetic, root)
    return root


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A valid vssbench checkpoint of perframe:segformer-tiny (8 classes)."""
    torch.manual_seed(0)
    return save_checkpoint(build_method("perframe:segformer-tiny", 8), tmp_path / "good.pt")


# --------------------------------------------------------------------------- paths outside the root


@pytest.mark.parametrize("entry", ["../outside", "OUTSIDE_ABSOLUTE", "val_0000/../../outside"])
def test_a_video_name_that_leaves_the_root_is_bad_input_and_nothing_is_written(vspw, tmp_path, capsys, entry,
                                                                              checkpoint):
    outside = tmp_path / "outside"
    shutil.copytree(vspw / "data" / "val_0000", outside / "data-like")
    (outside / "origin").symlink_to(outside / "data-like" / "origin")
    entry = str(outside) if entry == "OUTSIDE_ABSOLUTE" else entry
    (vspw / "val.txt").write_text(f"{entry}\n")
    predictions = tmp_path / "predictions"
    error = _bad_input(_run(tmp_path, vspw, "--checkpoint", str(checkpoint), "--save-predictions",
                            str(predictions)), capsys, f"{vspw / 'val.txt'}, line 1", repr(entry))
    assert "no '/', no '..'" in error
    assert not (tmp_path / "rows.jsonl").exists() and not predictions.exists()
    before = _files_under(vspw / "data" / "val_0000")
    assert [p.name for p in _files_under(outside / "data-like")] == [p.name for p in before]  # no prediction joined


def test_a_link_inside_the_root_that_leads_out_of_it_is_bad_input(vspw, tmp_path, capsys, checkpoint):
    outside = tmp_path / "elsewhere"
    shutil.move(vspw / "data" / "val_0001", outside)
    (vspw / "data" / "val_0001").symlink_to(outside)  # the listed name is plain; the folder is a link out
    _bad_input(_run(tmp_path, vspw, "--checkpoint", str(checkpoint)), capsys, str(outside), "outside")
    assert not (tmp_path / "rows.jsonl").exists()
    # A frame file that links out is refused the same way; the whole root behind one link is fine.
    (vspw / "data" / "val_0001").unlink()
    shutil.move(outside, vspw / "data" / "val_0001")
    frame = sorted((vspw / "data" / "val_0001" / "origin").iterdir())[0]
    moved = tmp_path / frame.name
    shutil.move(frame, moved)
    frame.symlink_to(moved)
    _bad_input(_run(tmp_path, vspw, "--checkpoint", str(checkpoint)), capsys, str(frame), "outside")
    moved.replace(frame)
    (tmp_path / "linked-root").symlink_to(vspw)
    assert main(_run(tmp_path, tmp_path / "linked-root", "--random-weights", "--max-videos", "1")) == 0


def test_a_cityscapes_city_or_frame_linking_out_of_its_split_is_bad_input(tmp_path):
    from test_contract import _cityscapes

    from vssbench.datasets import DatasetError
    from vssbench.datasets.cityscapes import CityscapesDataset

    labels = _cityscapes(tmp_path / "root", 19)
    assert len(CityscapesDataset.from_root(tmp_path / "root", "val").videos) == 1
    frames = tmp_path / "root/leftImg8bit_sequence/val/aachen"
    first = frames / "aachen_000001_000000_leftImg8bit.png"
    first.rename(tmp_path / first.name)
    first.symlink_to(tmp_path / first.name)
    with pytest.raises(DatasetError, match=f"{first} leads to .*, outside"):
        CityscapesDataset.from_root(tmp_path / "root", "val")
    first.unlink()
    (tmp_path / first.name).rename(first)
    shutil.move(labels, tmp_path / "labels-elsewhere")
    labels.symlink_to(tmp_path / "labels-elsewhere")
    with pytest.raises(DatasetError, match=f"{labels} leads to .*, outside"):
        CityscapesDataset.from_root(tmp_path / "root", "val")


def test_a_shard_index_naming_a_file_outside_the_folder_is_bad_input(tmp_path, capsys):
    folder = _saved_hf(tmp_path)
    weights = folder / "model.safetensors"
    outside = tmp_path / "x.safetensors"
    shutil.move(weights, outside)
    index = folder / "model.safetensors.index.json"
    names = list(json.loads((folder / "config.json").read_text()))  # any keys: the index is refused first
    for shard in ("../x.safetensors", str(outside)):
        index.write_text(json.dumps({"weight_map": {names[0]: shard}}))
        _bad_input(["convert", str(folder), "--method", "perframe:segformer-tiny", "--out", str(tmp_path / "c.pt")],
                   capsys, str(index), repr(shard))
    (folder / "shard.safetensors").symlink_to(outside)
    index.write_text(json.dumps({"weight_map": {names[0]: "shard.safetensors"}}))
    _bad_input(["convert", str(folder), "--method", "perframe:segformer-tiny", "--out", str(tmp_path / "c.pt")],
               capsys, str(folder / "shard.safetensors"), "outside")
    assert not (tmp_path / "c.pt").exists()


def test_the_shards_of_a_folder_are_each_named_with_their_sha256(tmp_path, small_synthetic):
    from vssbench.methods.weights import file_sha256

    folder = _saved_hf(tmp_path)
    state = {}
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    keys = sorted(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, folder / "a.safetensors")
    save_file({k: state[k] for k in keys[half:]}, folder / "b.safetensors")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "a.safetensors" if i < half else "b.safetensors" for i, k in enumerate(keys)}}))
    assert main(["run", "--methods", "perframe:segformer-tiny", "--data-root", str(small_synthetic), "--max-videos",
                 "1", "--checkpoint", str(folder), "--output", str(tmp_path / "r.jsonl"), "--num-workers", "0",
                 "--speed-rounds", "0"]) == 0
    (row,) = load_rows(tmp_path / "r.jsonl")
    files = {Path(entry["file"]).name: entry["sha256"] for entry in row["checkpoint"]["sources"][0]["files"]}
    assert files == {name: file_sha256(folder / name) for name in ("config.json", "a.safetensors", "b.safetensors")}
    assert row["checkpoint"]["declared"] is None  # a Hugging Face folder claims no training record


# --------------------------------------------------------------------------- pickles


class _Reconstructed:
    """Pickles as NumPy does an object array (``_reconstruct`` then its state), with a list of ``count``."""

    def __init__(self, shape: tuple, count: int) -> None:
        self.shape, self.count = shape, count

    def __reduce__(self):
        return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                (1, self.shape, np.dtype("O"), False, list(range(self.count))))


class _ShortData:
    """Pickles as NumPy does a float32 array of 4 values, with the data of 2."""

    def __reduce__(self):
        return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                (1, (4,), np.dtype("float32"), False, b"\0" * 8))


class _WritesAFile:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _pickle(path: Path, obj: object) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=4)
    return path


@pytest.mark.parametrize("name, payload, expected", [
    ("harmless-object-array.pkl", {"model": {"a": np.array([1, "x"], dtype=object)}}, "object and record arrays"),
    ("record-array.pkl", {"model": {"a": np.zeros(2, dtype=[("x", "f4"), ("y", "O")])}}, "NumPy dtype"),
    ("runs-code.pkl", {"model": {"a": _WritesAFile()}}, "posix.system"),
    ("runs-code.pth", "TORCH_SAVE", "posix.system"),
    ("short-data.pkl", {"model": {"a": _ShortData()}}, "(16 bytes) with 8 bytes of data"),
])
def test_pickles_build_only_numeric_arrays_and_run_nothing(tmp_path, capsys, monkeypatch, name, payload, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    if payload == "TORCH_SAVE":
        torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": _WritesAFile()}, path)
    else:
        _pickle(path, payload)
    _bad_input(["convert", str(path), "--method", "perframe:segformer-tiny", "--out", str(tmp_path / "c.pt")],
               capsys, str(path), expected)
    assert not (tmp_path / MARKER).exists() and not (tmp_path / "c.pt").exists()


def test_numpy_arrays_in_a_pth_file_are_read(tmp_path):
    """As docs/weights.md says: arrays (and a bookkeeping class holding them, as mmengine's message hub
    does) in a .pth are read through the same checked rebuild as a .pkl's."""
    from test_weights import HistoryBuffer, _hf_segformer

    from vssbench.methods.weights import load_weights, read_source

    buffer = HistoryBuffer()
    buffer.values = np.arange(5.0)
    state = _hf_segformer().state_dict()
    torch.save({"state_dict": state, "message_hub": {"log": buffer}, "meta": {"scale": np.float64(2.5),
               "palette": np.array([[1, 2, 3]], np.uint8)}}, tmp_path / "framework.pth")
    source = read_source(tmp_path / "framework.pth")
    assert isinstance(source.info["meta"] if "meta" in source.info else None, type(None))  # dicts stay out of info
    assert load_weights(build_method("perframe:segformer-tiny", 8), tmp_path / "framework.pth").format == "hf-segformer"
    with open(tmp_path / "arrays.pkl", "wb") as handle:  # protocol 2 from Python 3 writes bytes via _codecs
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}}, handle, protocol=2)
    for protocol in (4, 5):
        with open(tmp_path / f"arrays{protocol}.pkl", "wb") as handle:
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()}}, handle, protocol=protocol)
    for name in ("arrays.pkl", "arrays4.pkl", "arrays5.pkl"):
        tensors = read_source(tmp_path / name).tensors
        assert all(torch.equal(tensors[k], v) for k, v in state.items())


# --------------------------------------------------------------------------- headers, configs, metadata


def _nested_pickle(depth: int) -> bytes:
    """Pickle opcodes of a list nested ``depth`` deep, built without recursion."""
    return b"]" * depth + b"a" * (depth - 1)


def _with_metadata_bytes(checkpoint: Path, out: Path, replacement: bytes) -> Path:
    """``checkpoint`` re-zipped with its metadata (saved as the string NESTED) replaced by raw pickle opcodes."""
    with zipfile.ZipFile(checkpoint) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename.endswith("data.pkl"):
                sentinel = pickle.dumps("NESTED", protocol=2)[2:-3]  # BINUNICODE opcode and text, no memo or STOP
                assert sentinel in data
                data = data.replace(sentinel, replacement)
            target.writestr(entry, data)
    return out


def test_bad_headers_configs_and_metadata_are_bad_input_before_any_evaluation(tmp_path, capsys, small_synthetic,
                                                                             checkpoint):
    convert = ["--method", "perframe:segformer-tiny", "--out", str(tmp_path / "c.pt")]
    payload = torch.load(checkpoint, weights_only=True)
    torch.save({k: v for k, v in payload.items() if k != "state_dict"}, tmp_path / "headless.pt")
    _bad_input(["convert", str(tmp_path / "headless.pt"), *convert], capsys, "without a state_dict")
    torch.save({**payload, "num_classes": "eight"}, tmp_path / "eight.pt")
    _bad_input(["convert", str(tmp_path / "eight.pt"), *convert], capsys, "'eight'")
    for name, conventions, expected in (("elsewhere", {"no.such.module": {}}, "a module 'no.such.module'"),
                                        ("eps", {"segmentor": {"layer_norm_eps": 1e-6}}, "do not apply")):
        torch.save({**payload, "conventions": conventions}, tmp_path / f"{name}.pt")
        _bad_input(["convert", str(tmp_path / f"{name}.pt"), *convert], capsys, str(tmp_path / f"{name}.pt"),
                   expected)

    folder = _saved_hf(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    unlabelled = {k: v for k, v in config.items() if k not in ("id2label", "label2id")}
    for name, text, expected in (
        ("deep", "[" * 100_000 + "]" * 100_000, "nested"),
        ("id2label", json.dumps({**config, "id2label": ["sky"]}), "id2label is a list"),
        ("eight", json.dumps({**unlabelled, "num_labels": "eight"}), "'eight'"),
        ("wide", json.dumps({**unlabelled, "num_labels": 10**9}), "1000000000 classes"),
        ("big", json.dumps({**config, "padding": "x" * (9 << 20)}), "more than the 8,388,608 allowed"),
    ):
        copy = tmp_path / f"hf-{name}"
        shutil.copytree(folder, copy)
        (copy / "config.json").write_text(text)
        _bad_input(["convert", str(copy), *convert], capsys, str(copy / "config.json"), expected)
    listed = tmp_path / "hf-list"
    shutil.copytree(folder, listed)
    (listed / "model.safetensors").rename(listed / "a.safetensors")
    (listed / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a.safetensors"]}))
    _bad_input(["convert", str(listed), *convert], capsys, "weight_map object")
    assert not (tmp_path / "c.pt").exists()

    # Metadata nested 100,000 deep: refused when the checkpoint is read, before any row is computed.
    torch.save({**payload, "metadata": "NESTED"}, tmp_path / "sentinel.pt")
    deep = _with_metadata_bytes(tmp_path / "sentinel.pt", tmp_path / "deep.pt", _nested_pickle(100_000))
    _bad_input(["run", "--methods", "perframe:segformer-tiny", "--data-root", str(small_synthetic), "--checkpoint",
                str(deep), "--output", str(tmp_path / "rows.jsonl"), "--num-workers", "0", "--speed-rounds", "0"],
               capsys, str(deep), "nested more than 32 levels")
    assert not (tmp_path / "rows.jsonl").exists()


def test_a_malformed_synthetic_description_is_bad_input(small_synthetic, tmp_path, capsys):
    root = tmp_path / "synthetic"
    shutil.copytree(small_synthetic, root)
    meta = json.loads((root / "meta.json").read_text())
    for text, expected in (
        ("[]", "class_names is a list"),
        ("{not json", "cannot read"),
        (json.dumps({**meta, "spec": {**meta["spec"], "height": "tall"}}), "spec.height is 'tall'"),
        (json.dumps({**meta, "spec": {**meta["spec"], "colour": 1}}), "fields among"),
        (json.dumps({**meta, "class_names": [f"c{i}" for i in range(10_000)]}), "10000 classes; expected 1 to 2048"),
    ):
        (root / "meta.json").write_text(text)
        _bad_input(_run(tmp_path, root, "--random-weights", dataset="synthetic"), capsys, str(root / "meta.json"),
                   expected)


def test_an_image_larger_than_the_limit_is_refused_from_its_header(vspw, tmp_path, capsys, monkeypatch):
    frame = sorted((vspw / "data" / "val_0000" / "origin").iterdir())[0]
    Image.new("RGB", (3000, 3000)).save(frame.with_suffix(".png"))
    frame.unlink()
    error = _bad_input(_run(tmp_path, vspw, "--random-weights", "--max-videos", "1"), capsys,
                       str(frame.with_suffix(".png")), "3000x3000", "VSSBENCH_MAX_IMAGE_PIXELS")
    assert "9,000,000 pixels" in error
    monkeypatch.setenv("VSSBENCH_MAX_IMAGE_PIXELS", str(3000 * 3000))  # overridable: now the next check speaks
    _bad_input(_run(tmp_path, vspw, "--random-weights", "--max-videos", "1"), capsys, "3000x3000",
               "expected the same size")


@pytest.mark.parametrize("variable, value, case, expected", [
    ("VSSBENCH_MAX_CLASSES", "7", "run", "8 classes; expected 1 to 7"),  # the 8-class set itself
    ("VSSBENCH_MAX_JSON_BYTES", "100", "folder", "config.json is"),
    ("VSSBENCH_MAX_DEPTH", "1", "run", "nested more than 1 levels deep"),
    ("VSSBENCH_MAX_METADATA_BYTES", "10", "run", "more than the 10 allowed"),
    ("VSSBENCH_MAX_CLASSES", "many", "run", "$VSSBENCH_MAX_CLASSES='many': expected a positive integer"),
])
def test_each_limit_is_overridden_by_its_variable(small_synthetic, tmp_path, capsys, monkeypatch, checkpoint,
                                                 variable, value, case, expected):
    """Without the variable the command succeeds; with it, the lowered limit refuses it (exit 2)."""
    if case == "folder":  # a Hugging Face folder: its config.json is the JSON read
        argv = ["convert", str(_saved_hf(tmp_path)), "--method", "perframe:segformer-tiny", "--out",
                str(tmp_path / "c.pt")]
    else:  # the synthetic set (meta.json, 8 classes) with a checkpoint carrying a small nested record
        torch.save({**torch.load(checkpoint, weights_only=True), "metadata": {"iterations": [1, 2]}},
                   tmp_path / "record.pt")
        argv = _run(tmp_path, small_synthetic, "--max-videos", "1", "--speed-rounds", "0", "--overwrite",
                    "--checkpoint", str(tmp_path / "record.pt"), dataset="synthetic")
    assert main(argv) == 0
    monkeypatch.setenv(variable, value)
    _bad_input(argv, capsys, expected)


# --------------------------------------------------------------------------- files that are not files


def test_a_fifo_is_not_opened_as_a_checkpoint(tmp_path, capsys, small_synthetic):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(code=main(
        ["convert", str(fifo), "--method", "perframe:segformer-tiny", "--out", str(tmp_path / "c.pt")])), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader so that the test process can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("bench convert blocked on a FIFO")
    assert outcome["code"] == 2
    assert f"weights {fifo} is a FIFO; expected a regular file" in capsys.readouterr().err


def test_a_planted_lock_link_beside_the_output_creates_nothing(tmp_path, capsys, small_synthetic, checkpoint):
    target = tmp_path / "elsewhere" / "created-by-lock"
    target.parent.mkdir()
    (tmp_path / ".rows.jsonl.lock").symlink_to(target)
    _bad_input(_run(tmp_path, small_synthetic, "--checkpoint", str(checkpoint), "--max-videos", "1",
                    dataset="synthetic"), capsys, ".rows.jsonl.lock")
    assert not target.exists()


# --------------------------------------------------------------------------- provenance


def test_what_a_checkpoint_claims_is_marked_declared_and_what_was_read_is_verified(tmp_path, small_synthetic,
                                                                                   checkpoint):
    from vssbench.methods.weights import file_sha256

    payload = torch.load(checkpoint, weights_only=True)
    forged = {"format": "official-cffm", "file": "cffm_b5_vspw.pth", "sha256": "0" * 64}
    torch.save({**payload, "metadata": {"converted_from": [forged], "iterations": 160000}}, tmp_path / "forged.pt")
    assert main(_run(tmp_path, small_synthetic, "--checkpoint", str(tmp_path / "forged.pt"), "--max-videos", "1",
                     dataset="synthetic")) == 0
    (row,) = load_rows(tmp_path / "rows.jsonl")
    block = row["checkpoint"]
    assert block["sha256"] == file_sha256(tmp_path / "forged.pt")
    assert block["sources"][0]["format"] == "vssbench" and block["sources"][0]["mapped"] > 0
    assert block["declared"] == {"by": "checkpoint", "training": {"iterations": 160000}, "converted_from": [forged]}
    assert "converted_from" not in block and "training" not in block  # never beside what was verified


# --------------------------------------------------------------------------- memory


MEMORY_CHILD = r"""
import json, resource, sys
import torch, transformers  # noqa: F401 - imported before the baseline, as every command imports them
from vssbench.cli import main
from vssbench.methods import weights  # noqa: F401
cases = json.loads(sys.argv[1])
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
baseline = peak_mb()
for name, argv in cases:
    code = main(argv)
    print(json.dumps({"case": name, "code": code, "peak_growth_mb": round(peak_mb() - baseline, 1)}), flush=True)
"""


def _zip_bomb(path: Path, megabytes: int) -> Path:
    """A torch checkpoint of zeros whose archive entries are deflated: a small file, a large tensor."""
    plain = io.BytesIO()
    torch.save({"state_dict": {"decode_head.classifier.weight": torch.zeros(megabytes << 18)}}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry), compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_small_files_that_claim_gigabytes_are_refused_within_a_memory_bound(tmp_path):
    """Each case as the issue found it, in a child process (a crash or a runaway allocation ends it, not
    the test run): exit 2, and the child's peak memory grows by less than 200 MB over all of them."""
    hf = _saved_hf(tmp_path)
    config = {k: v for k, v in json.loads((hf / "config.json").read_text()).items() if k not in ("id2label",
                                                                                                 "label2id")}
    wide = tmp_path / "hf-wide"
    shutil.copytree(hf, wide)
    (wide / "config.json").write_text(json.dumps({**config, "num_labels": 10**9}))
    classifier = torch.zeros(1, 16).expand(10**9, 16)  # zero stride: 64 bytes stored, 64 GB claimed
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(hf / "model.safetensors").items()}
    state["decode_head.classifier.weight"] = classifier
    torch.save({"state_dict": state}, tmp_path / "zero-stride.pth")
    one = np.ones(1 << 18, np.float32)  # 1 MB, pickled once, referenced 500 times
    _pickle(tmp_path / "repeated.pkl", {"model": {f"layer{i}.weight": one for i in range(500)}})
    _pickle(tmp_path / "short-object-array.pkl", {"model": {"a": _Reconstructed((1 << 20,), 2)}})
    _zip_bomb(tmp_path / "bomb.pth", 256)
    out = str(tmp_path / "c.pt")
    convert = ["--method", "perframe:segformer-tiny", "--out", out]
    cases = [
        ("num_labels 10^9", ["convert", str(wide), *convert]),
        ("zero-stride classifier", ["convert", str(tmp_path / "zero-stride.pth"), *convert]),
        ("one array under 500 keys", ["convert", str(tmp_path / "repeated.pkl"), *convert]),
        ("object array shorter than its shape", ["convert", str(tmp_path / "short-object-array.pkl"), *convert]),
        ("zip bomb", ["convert", str(tmp_path / "bomb.pth"), *convert]),
    ]
    child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, json.dumps(cases)], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert child.returncode == 0, child.stderr[-2000:]  # -11 would be the segfault
    results = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    assert [r["case"] for r in results] == [name for name, _ in cases]
    assert all(r["code"] == 2 for r in results), results
    assert results[-1]["peak_growth_mb"] < 200, results
    for phrase in ("1000000000 classes", "claim 64,001,", "claim 524,288,000 bytes",
                   "object and record arrays", "zip bomb"):
        assert phrase in child.stderr, child.stderr[-3000:]
    assert not Path(out).exists()


LOADING_CHILD = r"""
import os, resource, sys
import torch
from vssbench.methods.base import build_method
from vssbench.methods.weights import load_weights
method = build_method("perframe:segformer-b1", 124)  # built before the baseline: only loading is measured
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
load_weights(method, sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) * 1024 / os.path.getsize(sys.argv[1]))
"""


def test_loading_real_weights_costs_about_their_size(tmp_path):
    """The checks read each file once: the peak memory of loading a genuine checkpoint grows by a small
    multiple of its size (1.06x measured for SegFormer-B2's 105 MiB)."""
    torch.manual_seed(0)
    path = save_checkpoint(build_method("perframe:segformer-b1", 124), tmp_path / "b1.pt")
    child = subprocess.run([sys.executable, "-c", LOADING_CHILD, str(path)], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert child.returncode == 0, child.stderr[-2000:]
    assert float(child.stdout.split()[-1]) < 2.5
