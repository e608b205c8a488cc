"""DCFM against BUAAHugeGun/DCFM's own code, its key and non-key paths, and its training.

``tests/golden/dcfm_tiny/`` was made by ``scripts/golden_dcfm.py`` (see its docstring), which runs
DCFM's ``DCFMEncoder``, ``DCFMDecoder`` and ``process/video_test.py``'s ``I_forward`` / ``B_forward``
from a checkout of the official repository: MiT at B0's widths (depths 2, 1, 1, 1, MLP ratio 1), head
64 wide, 16 channels of the shallow feature, 5 classes, both head forms, float64. It holds one
``encoder_epoch_1.pth`` and per head ``decoder_epoch_1.pth`` and the references; a test puts a pair in
a ``logs/`` folder, the layout of DCFM's released weights.
"""

import shutil
from pathlib import Path

import pytest
import torch

from vssbench.methods.base import build_method
from vssbench.methods.dcfm import DCFM, Head
from vssbench.methods.segmentors import SEGMENTORS, SegFormer
from vssbench.methods.weights import CheckpointError, load_weights

GOLDEN = Path(__file__).parent / "golden" / "dcfm_tiny"
TOLERANCE = 1e-10
MIT = dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 1, 1, 1], num_attention_heads=[1, 2, 5, 8],
           mlp_ratios=[1, 1, 1, 1], decoder_hidden_size=64)
HEADS = {"head0": Head(stage1_ch=16), "head1": Head(stage1_ch=16, head_nums=1)}


@pytest.fixture(params=sorted(HEADS))
def golden(request, monkeypatch, tmp_path):
    """(the method with the official weights loaded, the load record, the references) for one head form."""
    monkeypatch.setitem(SEGMENTORS, "golden-mit-b0", (SegFormer, MIT))
    monkeypatch.setitem(DCFM.presets, "golden", dict(segmentor="golden-mit-b0", head=HEADS[request.param]))
    logs = tmp_path / "exp" / "logs"
    logs.mkdir(parents=True)
    shutil.copy(GOLDEN / "encoder_epoch_1.pth", logs)
    shutil.copy(GOLDEN / request.param / "decoder_epoch_1.pth", logs)
    torch.manual_seed(0)
    method = build_method("dcfm:golden", 5)
    record = load_weights(method, tmp_path / "exp")
    return method.double().eval(), record, torch.load(GOLDEN / request.param / "reference.pt", weights_only=True)


def _paths(method: DCFM, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    method.reset()
    with torch.no_grad():
        key = method.step(frames[0].double(), True)
        nonkey = torch.cat([method.step(frame.double(), False) for frame in frames[1:]])
    return key, nonkey


def test_the_released_layout_loads_whole_and_computes_what_dcfm_computes(golden):
    method, record, reference = golden
    assert record.format == "dcfm" and not record.missing
    assert set(record.dropped) == {"mmseg 0.x BaseDecodeHead's conv_seg, which SegFormerHead never calls"}
    key, nonkey = _paths(method, reference["frames"])
    assert (key - reference["key_logits"]).abs().max() < TOLERANCE
    assert (nonkey - reference["nonkey_logits"]).abs().max() < TOLERANCE


def test_the_training_forward_computes_the_official_features_and_predictions(golden):
    method, _, reference = golden
    frames = reference["frames"].double()
    with torch.no_grad():
        high, shallow = method.encode(torch.cat([frames[0], frames[1]]))  # [U, L], as DCFMEncoder batches them
        common = method.decoder.common(high)
        key_l = method.decoder.fused(common[1:], shallow[1:])
        nonkey_l = method.decoder.fused(common[:1], shallow[1:])
        key_u = method.decoder.fused(common[:1], shallow[:1])
        pred_key_l = method.decoder.classify(key_l, (32, 64))
        pred_nonkey_l = method.decoder.classify(nonkey_l, (32, 64))
        agree = (method.decoder.final(key_l).argmax(1) == method.decoder.final(key_u).argmax(1)).unsqueeze(1)
    ours = [pred_key_l, pred_nonkey_l, key_l, nonkey_l, key_l * agree, key_u * agree]
    for name, mine, theirs in zip(("pred_L_t", "pred_L_hat", "feat_L_t", "feat_L_hat", "mf_L", "mf_U"), ours,
                                  reference["train"]):
        assert (mine - theirs).abs().max() < TOLERANCE, name


@pytest.mark.parametrize("name", ["segmentor.model.segformer.stages.0.blocks.0.mlp.fc1.weight",
                                  "segmentor.model.segformer.stages.3.blocks.0.attention.q_proj.weight",
                                  "decoder.fusion.conv.weight", "decoder.final.1.weight"])
def test_a_perturbed_weight_is_seen(golden, name):
    method, _, reference = golden
    parameter = dict(method.named_parameters()).get(name)
    if parameter is None:  # head1's classifier sits at final.4
        pytest.skip(f"{name} is not a parameter of this head form")
    with torch.no_grad():
        parameter.add_(0.01 * torch.randn_like(parameter))
    key, nonkey = _paths(method, reference["frames"])
    error = max((key - reference["key_logits"]).abs().max(), (nonkey - reference["nonkey_logits"]).abs().max())
    assert error > 100 * TOLERANCE  # the golden comparison would fail


def test_a_folder_of_two_iterations_names_them(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for iteration in (1, 2):
        shutil.copy(GOLDEN / "encoder_epoch_1.pth", logs / f"encoder_epoch_{iteration}.pth")
        shutil.copy(GOLDEN / "head0" / "decoder_epoch_1.pth", logs / f"decoder_epoch_{iteration}.pth")
    with pytest.raises(CheckpointError, match=r"iterations \['1', '2'\]"):
        load_weights(build_method("dcfm:tiny", 5), tmp_path)
    (logs / "decoder_epoch_2.pth").unlink()
    with pytest.raises(CheckpointError, match="decoder_epoch_2.pth beside it"):
        load_weights(build_method("dcfm:tiny", 5), logs / "encoder_epoch_2.pth")


def _frames(seed: int = 0) -> torch.Tensor:
    return torch.randn(4, 1, 3, 64, 96, generator=torch.Generator().manual_seed(seed))


def test_non_key_frames_run_stage_one_alone_and_reuse_the_key_frames_common_feature():
    torch.manual_seed(0)
    method = build_method("dcfm:tiny", 8).eval()
    frames = _frames()
    calls = []
    for stage in method.segmentor.model.segformer.stages[1:]:
        stage.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        method.reset()
        key = method.step(frames[0], True)
        deep_after_key = len(calls)
        nonkey = method.step(frames[1], False)
        assert len(calls) == deep_after_key  # no deep stage ran on the non-key frame
        method.reset()
        again_key = method.step(frames[1], True)
    assert key.shape == nonkey.shape == (1, 8, 64, 96)
    assert not torch.allclose(nonkey, again_key)  # the non-key path is not the key path on the same frame
    method.reset()
    with torch.no_grad():
        assert torch.equal(method.step(frames[0], True), key)  # deterministic


def test_training_reduces_the_loss_and_reaches_encoder_and_decoder():
    torch.manual_seed(0)
    method = build_method("dcfm:tiny", 8).train()
    frames = _frames().reshape(2, 2, 3, 64, 96)
    labels = torch.zeros(2, 2, 64, 96, dtype=torch.long)
    labels[..., 48:] = 3  # the right half is another class, and brighter: learnable from the pixels
    frames[:, :, 0, :, 48:] += 2.0
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    weights = {"cross_entropy_key": 1.0, "cross_entropy_nonkey": 0.4, "feature": 0.0, "consistency": 10.0}
    history = []
    for step in range(40):
        terms = method.loss({"frames": frames, "labels": labels})
        assert set(terms) == set(method.loss_terms())
        loss = sum(weights[k] * v for k, v in terms.items())
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name in ("segmentor.model.segformer.stages.0.patch_embeddings.proj.weight",
                         "segmentor.model.segformer.stages.3.blocks.0.mlp.fc1.weight",
                         "segmentor.model.decode_head.linear_fuse.weight", "decoder.fusion.conv.weight",
                         "decoder.final.1.weight"):
                assert dict(method.named_parameters())[name].grad.abs().sum() > 0, name
        optimizer.step()
        history.append(float(loss))
    assert history[-1] < 0.7 * history[0], history


@pytest.mark.parametrize("either_side", [True, False])
def test_pairs_draw_the_reference_on_either_side_only_when_the_recipe_says(small_synthetic, either_side):
    import dataclasses

    import numpy as np

    from vssbench.benchmark.training import TrainingClips
    from vssbench.datasets.synthetic import load_synthetic
    from vssbench.recipes import recipe_for

    dataset = load_synthetic(small_synthetic, "train")
    recipe = recipe_for(build_method("dcfm:tiny", 8), dataset.name, "synthetic")
    assert recipe.sampling["either_side"] is True
    recipe = dataclasses.replace(recipe, sampling={**recipe.sampling, "either_side": either_side})
    clips = TrainingClips(dataset, recipe, length=64, seed=0)
    gaps = [int(np.diff(clips._frame_indices(clips.videos[i % len(clips.videos)], np.random.default_rng([0, i])))[0])
            for i in range(64)]
    assert all(1 <= abs(gap) <= 9 for gap in gaps)  # (reference, labelled), 1 to 9 frames apart
    assert any(gap < 0 for gap in gaps) == either_side  # a reference after the labelled frame
    assert any(gap > 0 for gap in gaps)


def test_a_trained_segformer_starts_dcfm_its_classifier_dropped_with_the_reason(tmp_path):
    from vssbench.methods.weights import save_checkpoint

    torch.manual_seed(0)
    perframe = build_method("perframe:segformer-tiny", 8)
    save_checkpoint(perframe, tmp_path / "segformer.pt")
    method = build_method("dcfm:tiny", 8)
    record = load_weights(method, tmp_path / "segformer.pt", component="segmentor", purpose="train")
    assert record.dropped == {"the segmentor's classifier, which DCFM's own head replaces": 2}
    assert torch.equal(method.segmentor.model.decode_head.linear_fuse.weight,
                       perframe.segmentor.model.decode_head.linear_fuse.weight)
    with pytest.raises(CheckpointError, match="tensors the target lacks"):  # only that tensor is excused
        state = torch.load(tmp_path / "segformer.pt", weights_only=False)
        state["state_dict"]["segmentor.model.decode_head.extra.weight"] = torch.zeros(1)
        torch.save(state, tmp_path / "extra.pt")
        load_weights(build_method("dcfm:tiny", 8), tmp_path / "extra.pt", component="segmentor", purpose="train")
