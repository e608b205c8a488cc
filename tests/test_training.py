"""Paper recipes: recipes as data with sources, mmseg's augmentation semantics, and a training loop that
resumes bit-identically and keeps the global batch whatever the number of processes."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from quiet import QUIET
from ranks import on_ranks
from vssbench.benchmark.training import TrainingClips, learning_rate_factor, train
from vssbench.cli import main
from vssbench.datasets.augment import AugmentationError, augment, hsv_to_rgb, rgb_to_hsv
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import build_method, registered_methods
from vssbench.methods.weights import checkpoint_metadata
from vssbench.recipes import FIELDS, RecipeError, all_recipes, load, recipe_for

PAPER_PIPELINE = [{"type": "random_resize", "scale": [96, 64], "ratio_range": [0.5, 2.0]},
                  {"type": "random_crop", "size": [48, 48], "cat_max_ratio": 0.75},
                  {"type": "flip", "prob": 0.5}, {"type": "photometric_distortion"},
                  {"type": "pad", "size": [48, 48]}]


def _frame(seed: int, height: int = 64, width: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- recipes


def test_every_method_has_a_vspw_recipe_whose_every_value_cites_a_source():
    methods = {name for name, cls in registered_methods().items()
               if name != "copy" and cls.__module__.startswith("vssbench.")}  # the built-ins
    recipes = all_recipes()
    assert methods <= {r.method for r in recipes if r.dataset == "vspw"}
    assert {r.method for r in recipes if r.dataset == "cityscapes"} >= {"mpvss", "stt", "dff", "accel", "perframe"}
    for recipe in recipes:
        assert set(FIELDS) <= set(recipe.sources), (recipe.method, recipe.dataset)
        assert all(isinstance(source, str) and len(source) > 10 for source in recipe.sources.values())


def test_published_values_are_the_papers():
    mpvss = load("mpvss", "vspw")
    assert (mpvss.optimizer, mpvss.learning_rate, mpvss.iterations, mpvss.batch_size, mpvss.devices) == \
        ("adamw", 5e-5, 90000, 16, 8)
    assert mpvss.grad_clip == {"max_norm": 0.01, "norm_type": 2.0} and mpvss.sampling["max_gap"] == 10
    tfc = load("tfc", "vspw")
    assert (tfc.learning_rate, tfc.crop_size, tfc.batch_size, tfc.lr_schedule["type"]) == (6e-5, (480, 480), 16, "poly")
    stt = load("stt", "cityscapes")
    assert (stt.optimizer, stt.learning_rate, stt.momentum, stt.weight_decay, stt.batch_size, stt.iterations,
            stt.crop_size) == ("sgd", 0.01, 0.9, 5e-4, 8, 80000, (768, 768))
    assert stt.augmentation[0]["ratio_range"] == [0.5, 2.0] and stt.lr_schedule["power"] == 0.9


def test_bench_recipes_json_has_the_fields_researchers_read(capsys):
    assert main(["recipes", "--dataset", "vspw", "--json"]) == 0
    recipes = json.loads(capsys.readouterr().out)
    keys = {"method", "dataset", "optimizer", "learning_rate", "weight_decay", "iterations", "batch_size",
            "crop_size", "lr_schedule", "warmup_iterations", "sources"}
    assert all(keys <= set(r) for r in recipes) and {r["dataset"] for r in recipes} == {"vspw"}
    assert main(["recipes", "tfc", "--dataset", "cityscapes"]) == 2  # TFC trains on VSPW only
    assert "no recipes for 'tfc' on cityscapes" in capsys.readouterr().err


def test_the_learning_rate_follows_warm_up_then_poly():
    segformer = load("perframe", "vspw", "segformer-b0")
    assert learning_rate_factor(segformer, 0) == pytest.approx(1e-6)  # mmcv's linear warm-up from the ratio
    assert learning_rate_factor(segformer, 1500) == pytest.approx(1 - 1500 / 160000)
    pspnet = load("perframe", "vspw", "pspnet-r18")
    assert learning_rate_factor(pspnet, 80000) == pytest.approx(1e-4 / 0.01)  # mmseg's eta_min
    assert learning_rate_factor(load("dff", "cityscapes"), 10) == 0.1  # a constant warm-up rate


def test_parameter_groups_follow_the_papers_frameworks():
    from vssbench.benchmark.training import build_optimizer

    method = build_method("perframe:mask2former-tiny", 8)
    groups = build_optimizer(method, load("perframe", "vspw", "mask2former-r50")).param_groups
    rates = {(g["lr"], g["weight_decay"]) for g in groups}
    assert (5e-6, 0.05) in rates and (5e-5, 0.05) in rates and (5e-5, 0.0) in rates  # backbone x0.1, norms no decay
    segformer = build_method("perframe:segformer-tiny", 8)
    groups = build_optimizer(segformer, load("perframe", "vspw", "segformer-b0")).param_groups
    head = next(g for g in groups if any(p is segformer.segmentor.model.decode_head.classifier.weight
                                         for p in g["params"]))
    assert head["lr"] == pytest.approx(6e-4)


# --------------------------------------------------------------------------- augmentation


def test_every_frame_of_a_sample_gets_the_same_draw():
    frame, label = _frame(0), np.random.default_rng(1).integers(0, 4, (64, 96), dtype=np.uint8)
    frames, labels = augment([frame, frame.copy()], [label, label.copy()], PAPER_PIPELINE, np.random.default_rng(7))
    assert torch.equal(frames[0], frames[1]) and torch.equal(labels[0], labels[1])
    assert frames.shape == (2, 3, 48, 48)


def test_photometric_distortion_never_touches_labels():
    frame, label = _frame(2), np.random.default_rng(3).integers(0, 4, (64, 96), dtype=np.uint8)
    geometric = [step for step in PAPER_PIPELINE if step["type"] != "photometric_distortion"]
    for seed in range(20):
        with_it = augment([frame], [label], PAPER_PIPELINE, np.random.default_rng(seed))
        without = augment([frame], [label], geometric, np.random.default_rng(seed))
        assert torch.equal(with_it[1], without[1])


def test_crops_respect_cat_max_ratio_where_possible_and_pad_labels_with_255():
    label = np.zeros((64, 96), np.uint8)
    label[:, 80:] = 1  # class 1 in a strip at the right: most windows are all class 0
    crop = [{"type": "random_crop", "size": [32, 32], "cat_max_ratio": 0.75}]
    shares = []
    for seed in range(30):
        _, labels = augment([_frame(4)], [label], crop, np.random.default_rng(seed))
        counts = np.bincount(labels[0].flatten().numpy(), minlength=2)
        shares.append(counts.max() / counts.sum())
    assert sum(share < 0.75 for share in shares) >= 20  # without the constraint few windows would reach the strip
    small = [{"type": "random_crop", "size": [80, 120]}, {"type": "pad", "size": [80, 120]}]
    frames, labels = augment([_frame(5)], [np.zeros((64, 96), np.uint8)], small, np.random.default_rng(0))
    assert frames.shape[-2:] == (80, 120) and (labels[0, 64:] == 255).all() and (labels[0, :, 96:] == 255).all()
    assert (frames[0, :, 64:] == 0).all()  # the image padded with 0 after normalisation: the mean colour
    with pytest.raises(AugmentationError, match="needs padding"):
        augment([_frame(5)], [np.zeros((64, 96), np.uint8)], small[:1], np.random.default_rng(0))


def test_hsv_conversion_round_trips_within_uint8_hue_quantisation():
    """Hue in 2-degree steps (OpenCV's uint8 range) moves a saturated channel by up to 255 * 1 / 60 ~ 4.3."""
    frame = _frame(6)
    assert np.abs(hsv_to_rgb(rgb_to_hsv(frame)).astype(int) - frame).max() <= 5


# --------------------------------------------------------------------------- the loop


@pytest.mark.parametrize("spec", ["perframe:segformer-tiny", "perframe:mask2former-tiny", "perframe:pspnet-tiny",
                                  "dff:tiny", "accel:tiny", "mpvss:tiny", "tfc:tiny", "stt:tiny"])
def test_every_method_trains_with_its_paper_recipe_on_small_crops(small_synthetic, tmp_path, spec):
    assert main(["train", "--method", spec, "--data-root", str(small_synthetic), "--recipe", "paper", "--iters", "2",
                 "--batch", "2", "--micro-batch", "2", "--crop", "48x64", "--out", str(tmp_path / "w.pt"),
                 "--num-workers", "0", "--random-init",
                 "--quiet"]) == 0
    payload = torch.load(tmp_path / "w.pt", weights_only=True)
    assert payload["metadata"]["recipe"]["recipe"] == "paper" and payload["metadata"]["iterations"] == 2
    log = [json.loads(line) for line in (tmp_path / "w.pt.log.jsonl").read_text().splitlines()]
    assert log[-1]["iteration"] == 2 and "data_ms" in log[-1] and "step_ms" in log[-1]


def _train_command(root: Path, out: Path, iterations: int) -> list[str]:
    return [sys.executable, "-m", "vssbench", "train", "--method", "perframe:segformer-tiny", "--data-root", str(root),
            "--iters", str(iterations), "--batch", "2", "--save-every", "2", "--num-workers", "0", "--out", str(out)]


def test_a_killed_training_resumes_to_bit_identical_weights(small_synthetic, tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(_train_command(small_synthetic, tmp_path / "whole.pt", 16), env=environment, check=True,
                   capture_output=True)
    killed = tmp_path / "killed.pt"
    process = subprocess.Popen(_train_command(small_synthetic, killed, 16), env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed.with_name(killed.name + ".state")
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists() and not killed.exists()
    resumed_from = torch.load(state, weights_only=True)["iteration"]
    assert 0 < resumed_from < 16
    other = subprocess.run(_train_command(small_synthetic, killed, 17), env=environment, capture_output=True, text=True)
    assert other.returncode == 2 and "state of another training run" in other.stderr and state.exists()
    subprocess.run(_train_command(small_synthetic, killed, 16), env=environment, check=True, capture_output=True)
    whole, again = torch.load(tmp_path / "whole.pt", weights_only=True), torch.load(killed, weights_only=True)
    assert all(torch.equal(v, again["state_dict"][k]) for k, v in whole["state_dict"].items())
    assert whole["metadata"]["final_loss"] == again["metadata"]["final_loss"] and not state.exists()


def _train_with_batch(root: Path, micro_batch: int) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    dataset = load_synthetic(root, "train")
    torch.manual_seed(0)
    method = build_method("perframe:segformer-tiny", dataset.num_classes)
    recipe = recipe_for(method, dataset.name, "synthetic").with_overrides(iterations=3, batch_size=4,
                                                                          micro_batch=micro_batch)
    # SGD: Adam would turn the float noise of gradients that are zero in exact arithmetic (biases before a
    # batch norm) into steps of the learning rate, which differ with the order of the sums.
    recipe = dataclasses.replace(recipe, optimizer="sgd", momentum=0.9, learning_rate=0.05)
    train(method, dataset, seed=0, recipe=recipe, options=QUIET)
    return {name: p.detach().clone() for name, p in method.named_parameters()}


def test_two_processes_with_accumulation_end_where_one_process_does(small_synthetic, tmp_path):
    """A batch of 4 in passes of 1: one process accumulates 4 passes, two processes 2 each."""
    spreads = on_ranks(_train_with_batch, (small_synthetic, 1), tmp_path)
    single = _train_with_batch(small_synthetic, micro_batch=1)
    initial = _initial_parameters(small_synthetic)
    for spread in spreads:
        assert all(torch.allclose(single[k], v, atol=1e-6) for k, v in spread.items())
    assert max((single[k] - initial[k]).abs().max() for k in single) > 1e-3  # the weights did move


def _initial_parameters(root: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    method = build_method("perframe:segformer-tiny", load_synthetic(root, "train").num_classes)
    return {name: p.detach().clone() for name, p in method.named_parameters()}


def test_a_training_sample_is_the_same_whoever_draws_it(small_synthetic):
    dataset = load_synthetic(small_synthetic, "train")
    recipe = load("mpvss", "vspw").with_overrides(crop_size=(48, 64))
    first, second = TrainingClips(dataset, recipe, 10, seed=3), TrainingClips(dataset, recipe, 10, seed=3)
    assert torch.equal(first[7]["frames"], second[7]["frames"])
    assert not torch.equal(first[7]["frames"], first[8]["frames"])


def test_bad_training_input_exits_2_and_overwrites_nothing(small_synthetic, tmp_path, capsys):
    base = ["train", "--method", "perframe:segformer-tiny", "--data-root", str(small_synthetic), "--iters", "1",
            "--out", str(tmp_path / "w.pt"), "--num-workers", "0"]
    # The paper recipe starts the backbone from ImageNet weights: without them, refused unless --random-init.
    assert main([*base, "--recipe", "paper", "--crop", "200x200", "--batch", "2"]) == 2
    assert "starts its backbone from ImageNet MiT" in capsys.readouterr().err and not (tmp_path / "w.pt").exists()
    assert main([*base, "--recipe", "paper", "--crop", "200x200", "--batch", "2", "--random-init"]) == 0  # padded
    training = checkpoint_metadata(tmp_path / "w.pt")
    assert training["init"] == {"backbone": "random"} and "init" not in training["recipe"]
    (tmp_path / "w.pt").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--recipe", "fancy"])
    assert exit_info.value.code == 2
    assert main([*base, "--batch", "3", "--micro-batch", "2"]) == 2
    assert "does not split into passes" in capsys.readouterr().err
    assert main([*base, "--amp", "fp16"]) == 2 and "--device cuda" in capsys.readouterr().err
    assert not (tmp_path / "w.pt").exists()
    with pytest.raises(RecipeError, match="no tfc recipe for cityscapes"):
        load("tfc", "cityscapes")
