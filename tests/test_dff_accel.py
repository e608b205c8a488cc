import pytest
import torch

from propagation import third_frame_after_and_without_the_second
from quiet import QUIET
from vssbench.benchmark.training import ensure_trained, train
from vssbench.cli import main
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import build_method
from vssbench.methods.dff import FeatureFlow
from vssbench.methods.weights import load_weights


def test_zero_flow_and_unit_scale_return_the_key_features():
    feature_flow = FeatureFlow([16, 32], {"widths": (16, 32, 32, 64, 64, 64), "deconv": (16, 32, 32, 32)})
    torch.nn.init.zeros_(feature_flow.flownet.predict_flow.weight)  # flow = 0; the scale starts at exactly 1
    features = [torch.randn(2, 16, 16, 24), torch.randn(2, 32, 8, 12)]
    with torch.no_grad():
        warped = feature_flow(features, torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96))
    assert all(torch.equal(w, f) for w, f in zip(warped, features))


@pytest.mark.parametrize("spec", ["dff:tiny", "dff:r101"])
def test_dff_key_path_is_the_per_frame_segmentor(spec):
    torch.manual_seed(0)
    method = build_method(spec, 8).eval()
    frame = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(method.step(frame, True), method.segmentor(frame))


def test_dff_warps_from_the_key_frame_not_from_the_previous_frame():
    torch.manual_seed(0)
    third, direct = third_frame_after_and_without_the_second(build_method("dff:tiny", 8).eval())
    assert torch.equal(third, direct)


def test_dff_trains_flow_scale_and_head_only():
    method = build_method("dff:tiny", 8)
    trainable = {name for name, p in method.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("feature_flow.", "segmentor.model.decode_head.")) for n in trainable)
    assert any(n.startswith("feature_flow.scale.") for n in trainable)


def test_accel_with_the_update_branch_zeroed_equals_dff():
    torch.manual_seed(0)
    accel = build_method("accel:tiny", 8).eval()
    dff = build_method("dff:tiny", 8).eval()
    dff.load_state_dict(accel.reference.state_dict())
    with torch.no_grad():
        accel.fusion.weight[:, 8:].zero_()  # the update branch contributes nothing
        accel.fusion.weight[:, :8, 0, 0].copy_(torch.eye(8))
        accel.fusion.bias.zero_()
        key, current = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
        accel.step(key, True)
        dff.step(key, True)
        torch.testing.assert_close(accel.step(current, False), dff.step(current, False), rtol=1e-5, atol=1e-5)


def test_accel_key_frames_are_the_reference_networks_prediction_whatever_the_update_branch():
    torch.manual_seed(0)
    accel = build_method("accel:tiny", 8).eval()
    frame = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        accel.fusion.weight.normal_()  # a fusion that would change the scores if key frames used it
        expected = accel.reference.segmentor.decode(accel.reference.segmentor.extract(frame), frame.shape[-2:])
        accel.reset()
        torch.testing.assert_close(accel.step(frame, True), expected, rtol=0, atol=0)
        update_calls = []
        accel.update.segmentor.extract = lambda x, extract=accel.update.segmentor.extract: (
            update_calls.append(1), extract(x))[1]
        accel.reset()
        accel.step(frame, True)
        assert not update_calls
        accel.step(torch.randn(1, 3, 64, 96), False)
        assert update_calls  # the update branch runs on non-key frames only


def test_accel_propagates_frame_to_frame():
    torch.manual_seed(0)
    chained, direct = third_frame_after_and_without_the_second(build_method("accel:tiny", 8).eval())
    assert not torch.allclose(chained, direct)


def test_accel_training_runs_the_warp_chain_of_inference():
    """The loss of a 3-frame clip warps the key features through the same links as stepping through
    the clip does (frame 1 from 0, frame 2 from 1), and fuses the same features on the last frame."""
    torch.manual_seed(0)
    accel = build_method("accel:tiny", 8).eval()
    clip = torch.randn(1, 3, 3, 64, 96)
    links, fused = [], []
    propagate, fuse = accel.propagate, accel.fuse
    accel.propagate = lambda features, frame, previous: links.append((frame, previous)) or propagate(features, frame,
                                                                                                       previous)
    accel.fuse = lambda features, frame: fused.append((features, frame)) or fuse(features, frame)
    with torch.no_grad():
        for index in range(3):
            accel.step(clip[:, index], index == 0)
        inference_links, inference_fused = links[:], fused[-1]
        links.clear(), fused.clear()
        loss = accel.loss({"frames": clip, "labels": torch.zeros(1, 3, 64, 96, dtype=torch.long)})
    assert torch.isfinite(loss["cross_entropy"])
    assert len(links) == len(inference_links) == 2
    for (frame, previous), (frame_inf, previous_inf) in zip(links, inference_links):
        assert torch.equal(frame, frame_inf) and torch.equal(previous, previous_inf)
    (features, frame), = fused
    assert torch.equal(frame, clip[:, 2]) and torch.equal(inference_fused[1], clip[:, 2])
    assert all(torch.equal(a, b) for a, b in zip(features, inference_fused[0]))
    assert torch.equal(links[1][1], clip[:, 1])  # chained: the second link starts at frame 1, not at the key


def test_accel_trains_update_branch_and_fusion_only():
    method = build_method("accel:tiny", 8)
    trainable = {name.split(".")[0] for name, p in method.named_parameters() if p.requires_grad}
    assert trainable == {"update", "fusion"}


def test_accel_parameters_are_both_segmentors_flownet_and_fusion():
    accel = build_method("accel:r101+r18", 19)
    parts = [build_method("dff:r101", 19), build_method("perframe:deeplab-r18", 19)]
    fusion = 2 * 19 * 19 + 19
    assert sum(p.numel() for p in accel.parameters()) == sum(p.numel() for m in parts for p in m.parameters()) + fusion


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["dff:tiny", "accel:tiny"])
def test_training_reduces_the_loss(small_synthetic, spec):
    dataset = load_synthetic(small_synthetic, "train")
    method = build_method(spec, dataset.num_classes)
    report = train(method, dataset, iterations=60, seed=0, options=QUIET)
    first, last = sum(report.history[:5]) / 5, sum(report.history[-5:]) / 5
    assert last < 0.92 * first, (first, last)


@pytest.mark.slow
def test_bench_train_chains_segmentor_dff_and_accel(small_synthetic, tmp_path):
    """`bench train` runs each stage from the previous one's checkpoint; Accel's reference
    branch is then exactly the DFF that was trained, and stays frozen through its stage."""
    common = ["--dataset", "synthetic", "--data-root", str(small_synthetic), "--iters", "3", "--num-workers", "0"]
    assert main(["train", "--method", "perframe:segformer-tiny", "--out", str(tmp_path / "seg.pt"), *common]) == 0
    assert main(["train", "--method", "perframe:pspnet-tiny", "--out", str(tmp_path / "upd.pt"), *common]) == 0
    assert main(["train", "--method", "dff:tiny", "--init", str(tmp_path / "seg.pt"), "--out", str(tmp_path / "dff.pt"),
                 *common]) == 0
    assert main(["train", "--method", "accel:tiny", "--init", str(tmp_path / "dff.pt"), "--init",
                 str(tmp_path / "upd.pt"), "--out", str(tmp_path / "accel.pt"), *common]) == 0
    dff = build_method("dff:tiny", 8)
    load_weights(dff, tmp_path / "dff.pt")
    accel = build_method("accel:tiny", 8)
    load_weights(accel, tmp_path / "accel.pt")
    for name, value in dff.state_dict().items():
        assert torch.equal(accel.reference.state_dict()[name], value), name


def test_accel_trains_on_an_empty_cache_its_dff_included(small_synthetic, tmp_path):
    """Accel freezes its DFF; an empty cache still trains that DFF, as `bench train --method dff:tiny` would,
    before Accel's own stage."""
    dataset = load_synthetic(small_synthetic, "train")
    torch.manual_seed(0)
    stage = ensure_trained(build_method("accel:tiny", dataset.num_classes), dataset, tmp_path, iterations=2)
    assert stage.name.startswith("accel-tiny-") and any(p.name.startswith("dff-tiny-") for p in tmp_path.iterdir())
