"""What a recipe declares is what training does: each test changes a setting and sees training change
(the weights, the gradient, a mode, a file), so that a setting nothing applies would fail it."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from quiet import QUIET
from vssbench.benchmark.regression import check
from vssbench.benchmark.training import (
    TrainingError,
    build_optimizer,
    ensure_trained,
    loss_weights,
    parameter_groups,
    resolved_amp,
    train,
)
from vssbench.cli import main
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import NORM_TYPES, build_method
from vssbench.methods.weights import checkpoint_metadata, from_portable
from vssbench.recipes import load


def _small(recipe, **changes):
    """The recipe at test size: one step of two 48x64 samples, in one pass."""
    small = recipe.with_overrides(iterations=1, batch_size=2, micro_batch=2, crop_size=(48, 64))
    return dataclasses.replace(small, **changes)


def _parameters(method) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in method.named_parameters()}


def _trained(spec: str, dataset, recipe, variant: str | None = None):
    torch.manual_seed(0)
    method = build_method(spec, dataset.num_classes, variant)
    before = _parameters(method)
    buffers = {name: b.clone() for name, b in method.named_buffers()}
    train(method, dataset, seed=0, recipe=recipe, options=QUIET)
    return method, before, buffers


# --------------------------------------------------------------------------- loss weights


def test_the_loss_weights_weight_the_terms_that_train(small_synthetic):
    dataset = load_synthetic(small_synthetic, "train")
    recipe = _small(load("tfc", "synthetic"), weight_decay=0.0)
    zero = _small(recipe, loss_weights={name: 0.0 for name in recipe.loss_weights}, weight_decay=0.0)
    # Every weight 0: no gradient, so AdamW's first step moves nothing (an unweighted sum would move it).
    method, before, _ = _trained("tfc:tiny", dataset, zero)
    assert all(torch.equal(before[k], v) for k, v in _parameters(method).items())
    # Only the focal term: the classifier, which only the cross-entropies reach, stays; Eq. 5-6's projection moves.
    focal_only = dataclasses.replace(zero, loss_weights={**zero.loss_weights, "focal_consistency": 1.0})
    method, before, _ = _trained("tfc:tiny", dataset, focal_only)
    after = _parameters(method)
    classifier = "segmentor.model.decode_head.classifier.weight"
    level2 = "segmentor.model.decode_head.linear_projections.1.proj.weight"
    assert torch.equal(before[classifier], after[classifier]) and not torch.equal(before[level2], after[level2])
    method, before, _ = _trained("tfc:tiny", dataset, recipe)
    assert not torch.equal(before[classifier], _parameters(method)[classifier])


def test_a_term_without_a_weight_or_a_weight_without_a_term_is_an_error_naming_both():
    method = build_method("tfc:tiny", 8)
    recipe = load("tfc", "synthetic")
    missing = dataclasses.replace(recipe, loss_weights={"cross_entropy_key": 0.5, "cross_entropy_nonkey": 0.5})
    with pytest.raises(TrainingError, match="term focal_consistency has no weight.*the method's terms"):
        loss_weights(method, missing)
    stray = dataclasses.replace(recipe, loss_weights={**recipe.loss_weights, "auxiliary": 0.4})
    with pytest.raises(TrainingError, match="weight auxiliary has no term.*loss_weights: .*auxiliary"):
        loss_weights(method, stray)
    # A variant without w_t declares the focal term dropped: its weight is no error, and it is not applied.
    assert loss_weights(build_method("tfc:tiny", 8, "feature-reuse"), recipe) == {
        "cross_entropy_key": 0.5, "cross_entropy_nonkey": 0.5}
    # DFF's recipes weight the head losses of every segmentor it runs over; each preset trains its own.
    over_mask2former = build_method("dff:mask2former-r101", 8)
    assert loss_weights(over_mask2former, load("dff", "cityscapes")) == {
        "class_current": 2.0, "mask_current": 5.0, "dice_current": 5.0, "class_key": 2.0, "mask_key": 5.0,
        "dice_key": 5.0}
    assert set(loss_weights(build_method("dff:tiny", 8), load("dff", "vspw"))) == {"cross_entropy_current",
                                                                                  "cross_entropy_key"}
    # Every built-in recipe weights exactly the terms of its default method.
    for name, spec in (("perframe", "perframe:pspnet-tiny"), ("mpvss", "mpvss:tiny"), ("dff", "dff:tiny"),
                       ("stt", "stt:tiny"), ("accel", "accel:tiny")):
        built = build_method(spec, 8)
        recipe = load(name, "synthetic", built.segmentor_preset if name == "perframe" else None)
        assert set(loss_weights(built, recipe)) == set(built.loss_terms())


# --------------------------------------------------------------------------- what trains


@pytest.mark.parametrize("spec, dataset_name", [("dff:tiny", "vspw"), ("stt:tiny", "cityscapes")])
def test_paper_recipes_train_the_feature_network_and_synthetic_ones_keep_it(small_synthetic, spec, dataset_name):
    dataset = load_synthetic(small_synthetic, "train")
    name = spec.split(":")[0]
    backbone = "segmentor.model.segformer.stages.1.blocks.0.attention.q_proj.weight" if name == "dff" else \
        "segmentor.backbone.stages.2.0.conv1.weight"
    # Paper: DFF end to end but its norms (Accel's FIXED_PARAMS), STT the whole network.
    method, before, buffers = _trained(spec, dataset, _small(load(name, dataset_name)))
    assert not torch.equal(before[backbone], _parameters(method)[backbone])
    method.train()
    norms = [m for n, m in method.segmentor.named_modules() if isinstance(m, NORM_TYPES)]
    if name == "dff":  # frozen exactly as the recipe says: affines fixed, statistics with them
        assert norms and not any(m.training or any(p.requires_grad for p in m.parameters()) for m in norms)
    else:  # PSPNet's batch norms learn, and their running statistics move
        assert norms and all(m.training for m in norms)
        moved = [k for k, v in method.named_buffers() if k.endswith("running_mean") and not torch.equal(v, buffers[k])]
        assert any(k.startswith("segmentor.backbone.") for k in moved)
    # Synthetic: the per-frame network stays as trained, its norms in evaluation mode.
    method, before, buffers = _trained(spec, dataset, _small(load(name, "synthetic")))
    after = _parameters(method)
    assert torch.equal(before[backbone], after[backbone])
    assert all(torch.equal(v, buffers[k]) for k, v in method.named_buffers() if k.startswith("segmentor.backbone."))
    method.train()
    assert not any(m.training for n, m in method.segmentor.named_modules() if isinstance(m, NORM_TYPES)
                   and not n.startswith("model.decode_head"))


def test_the_optimizer_updates_exactly_trainable_parameters(monkeypatch):
    method = build_method("dff:tiny", 8)
    flow = list(method.feature_flow.parameters())
    monkeypatch.setattr(type(method), "trainable_parameters", lambda self: iter(flow))
    optimizer = build_optimizer(method, load("dff", "synthetic"))
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in flow}


def test_amp_is_the_recipes_on_cuda_unless_overridden_and_none_on_a_cpu():
    mpvss, segformer = load("mpvss", "vspw"), load("perframe", "vspw", "segformer-b0")
    assert mpvss.amp and not segformer.amp
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolved_amp(None, mpvss, cuda) == "fp16" and resolved_amp("off", mpvss, cuda) is None
    assert resolved_amp(None, segformer, cuda) is None and resolved_amp("bf16", segformer, cuda) == "bf16"
    assert resolved_amp(None, mpvss, cpu) is None


# --------------------------------------------------------------------------- parameter groups


def _renamed(source_state: dict[str, torch.Tensor], convert, segmentor) -> dict[str, str]:
    """The segmentor's parameter names -> the source's, found by converting tensors that each hold their
    own index (the converter's portable names mapped to the module's)."""
    names = [name for name, tensor in source_state.items() if tensor.is_floating_point()]
    converted = convert({name: torch.full_like(source_state[name], float(i), dtype=torch.float64)
                         for i, name in enumerate(names)})
    return {ours: names[int(tensor.flatten()[0])] for ours, tensor in from_portable(segmentor, converted.state).items()}


def _compare_with_source(ours: dict[str, tuple[float, float]], source_names: dict[str, str], rule) -> dict:
    """Assert every parameter's (lr, decay) is ``rule`` of its source name; returns those without one."""
    for name, value in ours.items():
        source = source_names.get(name.removeprefix("segmentor."))
        if source is not None:
            assert value == pytest.approx(rule(source)), (name, source)
    return {name: value for name, value in ours.items() if name.removeprefix("segmentor.") not in source_names}


def _mmcv_rule(name: str, custom_keys: dict, lr: float, decay: float) -> tuple[float, float]:
    """mmcv's DefaultOptimizerConstructor.add_params with paramwise_cfg.custom_keys, transcribed."""
    for key in sorted(sorted(custom_keys), key=len, reverse=True):
        if key in name:
            return lr * custom_keys[key].get("lr_mult", 1.0), decay * custom_keys[key].get("decay_mult", 1.0)
    return lr, decay


def test_segformer_groups_are_mmcvs_on_the_nvlabs_names(golden_presets):
    from vssbench.methods.segmentors.segformer import from_nvlabs

    state = torch.load("tests/golden/segformer_nvlabs.pth", map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    recipe = load("perframe", "vspw", "segformer-b0")
    custom = {"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}, "pos_block": {"decay_mult": 0.0}}  # CFFM's
    method = build_method("perframe:golden-segformer", 8)
    ours = {name: (lr, decay) for name, _, lr, decay in parameter_groups(method, recipe)}
    unmatched = _compare_with_source(ours, _renamed(state, from_nvlabs, method.segmentor),
                                     lambda source: _mmcv_rule(source, custom, recipe.learning_rate, recipe.weight_decay))
    assert not unmatched  # every parameter has an NVlabs name
    decays = {decay for lr, decay in ours.values() if lr == pytest.approx(recipe.learning_rate * 10)}
    assert decays == {recipe.weight_decay}  # the decoder's batch norm takes 'head' (lr x10) and keeps its decay


def _detectron2_rule(name: str, lr: float, decay: float) -> tuple[float, float]:
    """Mask2Former's train_net.py build_optimizer on detectron2's names, transcribed: the module types
    are read off detectron2's Mask2Former-Swin (LayerNorm norm*/decoder_norm, the GroupNorm of its Conv2d
    wrappers' .norm and of the pixel decoder's input_proj.N.1, nn.Embedding query_feat/query_embed/the
    decoder's level_embed; the pixel decoder's level_embed is an nn.Parameter, so it decays)."""
    module, _, _ = name.rpartition(".")
    if module.startswith("backbone."):
        lr *= 0.1
    if "relative_position_bias_table" in name or "absolute_pos_embed" in name:
        decay = 0.0
    last = module.rpartition(".")[2]
    if last.startswith("norm") or last == "decoder_norm" or re.search(r"pixel_decoder\.input_proj\.\d+\.1$", module):
        decay = 0.0
    if module.endswith(("predictor.query_feat", "predictor.query_embed", "predictor.level_embed")):
        decay = 0.0
    return lr, decay


def test_mask2former_swin_groups_are_detectron2s_on_the_detectron2_names(golden_presets):
    import pickle

    from vssbench.methods.segmentors.mask2former import from_detectron2

    with open("tests/golden/mask2former_swin_d2.pkl", "rb") as handle:
        payload = pickle.load(handle)
    state = {k: torch.as_tensor(v) for k, v in payload["model"].items()}
    recipe = load("perframe", "vspw", "mask2former-swin-t")
    method = build_method("perframe:golden-mask2former-swin", 8)
    ours = {name: (lr, decay) for name, _, lr, decay in parameter_groups(method, recipe)}
    unmatched = _compare_with_source(ours, _renamed(state, from_detectron2, method.segmentor),
                                     lambda source: _detectron2_rule(source, recipe.learning_rate, recipe.weight_decay))
    # Hugging Face's Swin has a final LayerNorm that detectron2's backbone lacks (unused by Mask2Former):
    # a backbone norm, so the backbone's rate and no decay.
    assert {n.rpartition("encoder.")[2] for n in unmatched} == {"swin.layernorm.weight", "swin.layernorm.bias"}
    assert all(value == pytest.approx((5e-6, 0.0)) for value in unmatched.values())
    rates = {(round(lr, 12), decay) for lr, decay in ours.values()}
    assert (5e-6, 0.0) in rates and (5e-6, 0.05) in rates  # backbone norms: the backbone's rate, the norms' decay


@pytest.fixture
def golden_presets(monkeypatch):
    """The golden files' architectures as per-frame presets (tests/test_weights_golden.py)."""
    from test_weights_golden import PRESETS

    from vssbench.methods.perframe import PerFrame
    from vssbench.methods.segmentors import SEGMENTORS

    for name in ("golden-segformer", "golden-mask2former-swin"):
        monkeypatch.setitem(SEGMENTORS, name, PRESETS[name])
        monkeypatch.setitem(PerFrame.presets, name, {})


# --------------------------------------------------------------------------- caches and records


def test_a_threshold_variant_trained_first_gives_the_model_trained_at_0_8(small_synthetic, tmp_path):
    dataset = load_synthetic(small_synthetic, "train")
    paths = {}
    for first in ("sparse-msda-0.5", "sparse-msda-0.8"):
        torch.manual_seed(0)
        method = build_method("tfc:tiny", dataset.num_classes, first)
        paths[first] = ensure_trained(method, dataset, tmp_path / first, iterations=2)
    shared, own = (torch.load(paths[v], weights_only=True) for v in ("sparse-msda-0.5", "sparse-msda-0.8"))
    assert shared["variant"] == "sparse-msda-0.8" and paths["sparse-msda-0.5"].name == paths["sparse-msda-0.8"].name
    assert all(torch.equal(v, own["state_dict"][k]) for k, v in shared["state_dict"].items())


def _run(root, tmp_path, *extra) -> list[dict]:
    output = tmp_path / "run.jsonl"
    assert main(["run", "--methods", "perframe", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"),
                 "--train-iters", "1", "--speed-rounds", "0", "--output", str(output), "--quiet", *extra]) == 0
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_max_videos_limits_what_is_scored_never_what_auto_training_sees(small_synthetic, tmp_path):
    row, = _run(small_synthetic, tmp_path, "--max-videos", "1")
    assert row["videos"]["count"] == 1
    training = checkpoint_metadata(row["checkpoint"]["path"])
    assert training["videos"]["count"] == 3  # the whole training split
    assert training["init"] == {"all": "random"} and training["loss_weights"] == {"cross_entropy": 1.0}
    assert training["micro_batch"] == 8 and training["amp"] is None


def test_each_seed_writes_its_own_predictions(small_synthetic, tmp_path):
    rows = _run(small_synthetic, tmp_path, "--max-videos", "1", "--seeds", "0,1", "--save-predictions",
                str(tmp_path / "predictions"))
    folders = {row["predictions_dir"] for row in rows}
    assert len(rows) == 2 and len(folders) == 2
    assert all(any(Path(folder).rglob("*.png")) for folder in folders)


def test_check_compares_only_rows_scored_and_trained_alike():
    from test_report import ROWS

    baseline = [dict(ROWS[0])]
    other = [dict(ROWS[0], metrics={**ROWS[0]["metrics"], "miou_mode": "mmseg", "miou": 10.0})]
    result = check(other, baseline)
    assert result.compared == 0 and result.skipped[0][1].startswith("scored differently (miou_mode vspw -> mmseg)")
    recipe = {"learning_rate": 0.002, "loss_weights": {"cross_entropy": 1.0}}
    trained = [dict(ROWS[0], checkpoint={"training": {"recipe": recipe}})]
    changed = [dict(ROWS[0], metrics={**ROWS[0]["metrics"], "miou": 10.0},
                    checkpoint={"training": {"recipe": {**recipe, "loss_weights": {"cross_entropy": 0.5}}}})]
    result = check(changed, trained)
    assert result.compared == 0 and "recipe (loss_weights)" in result.skipped[0][1]
    assert not check([dict(trained[0], metrics={**ROWS[0]["metrics"], "miou": 10.0})], trained).passed


def test_validation_scores_at_the_interval_it_is_told_and_names_it(small_synthetic, tmp_path, monkeypatch):
    from vssbench.benchmark import runner

    scored = []
    real = runner.evaluate

    def evaluate(method, dataset, schedule, options):
        scored.append((schedule.interval, options.miou_mode, len(dataset.videos)))
        return real(method, dataset, schedule, options)

    monkeypatch.setattr(runner, "evaluate", evaluate)
    out = tmp_path / "dff.pt"
    for interval in ("2", "7"):
        assert main(["train", "--method", "dff:tiny", "--data-root", str(small_synthetic), "--iters", "2", "--batch",
                     "2", "--num-workers", "0", "--random-init", "--validate-every", "2", "--validate-videos", "1",
                     "--validate-interval", interval, "--out", str(out), "--quiet"]) == 0
    assert scored == [(2, "vspw", 1), (7, "vspw", 1)]
    log = [json.loads(line) for line in out.with_name(out.name + ".log.jsonl").read_text().splitlines()]
    assert [(r["key_interval"], r["miou_mode"]) for r in log if "validation" in r][-1] == (7, "vspw")


def test_a_recipe_whose_crop_size_is_not_its_random_crop_is_refused(monkeypatch):
    import copy

    from vssbench import recipes

    document = copy.deepcopy(recipes._file("tfc"))
    document["vspw"]["crop_size"] = {"value": [512, 512], "source": "a crop the pipeline does not take"}
    monkeypatch.setattr(recipes, "_file", lambda method: document)
    with pytest.raises(recipes.RecipeError, match=r"crop_size \[512, 512\] is not the augmentation's random crop"):
        load("tfc", "vspw")
