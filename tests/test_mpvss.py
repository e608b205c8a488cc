import dataclasses

import pytest
import torch

from propagation import third_frame_after_and_without_the_second
from quiet import QUIET
from vssbench.benchmark.training import train
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import build_method
from vssbench.methods.flownet import FlowNetS, FlowNetSEncoder
from vssbench.methods.mpvss import VARIANTS, warp_masks
from vssbench.methods.warp import flow_warp, resize_flow


def test_zero_flow_returns_the_maps_exactly():
    maps = torch.randn(3, 5, 17, 23)
    assert torch.equal(flow_warp(maps, torch.zeros(3, 2, 17, 23)), maps)
    # Also when the flow lives on a coarser grid and is resized.
    assert torch.equal(flow_warp(maps, torch.zeros(3, 2, 5, 7)), maps)


def test_known_translation_moves_a_mask_by_that_translation():
    mask = torch.zeros(1, 1, 20, 30)
    mask[0, 0, 8:12, 10:16] = 1.0
    dx, dy = 3.0, -2.0  # each output pixel samples the source at (x + 3, y - 2)
    flow = torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(1, 2, 20, 30)
    warped = flow_warp(mask, flow)
    expected = torch.zeros_like(mask)
    expected[0, 0, 10:14, 7:13] = 1.0  # the square moves by (-3, +2)
    assert torch.equal(warped, expected)


def test_flow_resizing_rescales_vectors():
    flow = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand(1, 2, 4, 8)
    resized = resize_flow(flow, (8, 32))
    assert torch.allclose(resized[0, 0], torch.full((8, 32), 4.0))
    assert torch.allclose(resized[0, 1], torch.full((8, 32), 4.0))


def test_flownets_is_full_size_and_its_encoder_strides():
    assert sum(p.numel() for p in FlowNetS().parameters()) / 1e6 == pytest.approx(38.68, abs=0.01)
    outputs = FlowNetSEncoder()(torch.randn(1, 6, 128, 256))
    assert [tuple(o.shape[1:]) for o in outputs] == [(128, 32, 64), (256, 16, 32), (512, 8, 16), (512, 4, 8),
                                                     (1024, 2, 4)]


def test_paper_preset_parameter_counts():
    method = build_method("mpvss:r50", 124)
    flow_module = sum(p.numel() for p in method.flow_module.parameters()) / 1e6
    total = sum(p.numel() for p in method.parameters()) / 1e6
    assert flow_module == pytest.approx(40.08, rel=0.03)
    assert total == pytest.approx(84.1, rel=0.03)


# MPVSS Table 3b: parameters of the flow module of each flow design, R50 on VSPW (124 classes).
TABLE_3B_FLOW_PARAMS_M = {"optical-flow": 38.68, "query-random": 37.56, "query-learned": 37.56,
                          "query-for-pf": 40.08, "query-based-flow": 40.08}
# query-random starts its flow queries from learned embeddings (100 queries x 256): 0.0256M that Table 3b's
# count leaves out (it prints 37.56 for both query-random and query-learned); ours counts them.
LEARNED_QUERY_PARAMS_M = 100 * 256 / 1e6


@pytest.mark.parametrize("variant", sorted(TABLE_3B_FLOW_PARAMS_M))
def test_flow_designs_have_table_3b_parameter_counts(variant):
    method = build_method("mpvss:r50", 124, variant)
    flow = method.flownet if variant == "optical-flow" else method.flow_module
    expected = TABLE_3B_FLOW_PARAMS_M[variant] + (LEARNED_QUERY_PARAMS_M if variant == "query-random" else 0.0)
    assert sum(p.numel() for p in flow.parameters()) / 1e6 == pytest.approx(expected, abs=0.01)
    if variant.startswith("query-"):
        pixel_branch = {"pixel_decoder", "predict_flow"} <= {name for name, _ in flow.named_children()}
        assert pixel_branch == (variant in ("query-for-pf", "query-based-flow"))


def test_flow_queries_start_from_the_key_frame_queries_or_a_learned_embedding():
    torch.manual_seed(0)
    methods = {v: build_method("mpvss:tiny", 8, v).eval() for v in ("query-learned", "query-random")}
    key, current = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for variant, method in methods.items():
            output = method.segmentor.decode_queries(method.segmentor.extract(key), (64, 96))
            flows = method.mask_flows(current, key, output)
            other = dataclasses.replace(output, query_embeddings=output.query_embeddings + 1.0)
            moved = not torch.allclose(method.mask_flows(current, key, other), flows)
            assert moved == (variant == "query-learned"), variant  # only key-frame queries depend on the key frame
            assert flows[0, 0].shape == (2, 8, 12) and not torch.allclose(flows[0, 0], flows[0, 1])  # per mask


def test_intermediate_shapes():
    torch.manual_seed(0)
    method = build_method("mpvss:tiny", 8).eval()
    key, current = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        output = method.segmentor.decode_queries(method.segmentor.extract(key), (64, 96))
        assert output.mask_logits.shape == (2, 16, 16, 24) and output.query_embeddings.shape == (2, 16, 32)
        flows = method.mask_flows(current, key, output)
        assert flows.shape == (2, 16, 2, 8, 12)  # one flow per mask at 1/8 of the frame
        assert warp_masks(output.mask_logits, flows).shape == output.mask_logits.shape
        method.reset()
        assert method.step(key, True).shape == method.step(current, False).shape == (2, 8, 64, 96)


def test_key_path_equals_the_segmentor_and_nonkey_paths_follow_the_variant():
    torch.manual_seed(0)
    methods = {v: build_method("mpvss:tiny", 8, v).eval() for v in ("query-based-flow", "copy")}
    perframe = build_method("perframe:mask2former-tiny", 8).eval()
    perframe.load_state_dict(methods["copy"].state_dict())
    methods["query-based-flow"].load_state_dict(methods["copy"].state_dict(), strict=False)
    key, current = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected_key = perframe.step(key, True)
        for method in methods.values():
            method.reset()
            assert torch.equal(method.step(key, True), expected_key)
        assert torch.equal(methods["copy"].step(current, False), expected_key)
        propagated = methods["query-based-flow"].step(current, False)
        assert not torch.equal(propagated, expected_key)
        assert not torch.allclose(propagated, perframe.step(current, True))


def test_flow_is_always_from_the_key_frame():
    torch.manual_seed(0)
    after_intermediate, direct = third_frame_after_and_without_the_second(build_method("mpvss:tiny", 8).eval())
    assert torch.equal(after_intermediate, direct)


def test_segmentor_is_frozen_except_class_and_mask_heads():
    method = build_method("mpvss:tiny", 8)
    trainable = {name for name, p in method.named_parameters() if p.requires_grad}
    assert any(name.startswith("flow_module.") for name in trainable)
    segmentor = {name for name in trainable if name.startswith("segmentor.")}
    assert segmentor and all("class_predictor" in n or "mask_embedder" in n for n in segmentor)
    method.train()  # what is frozen stays in evaluation mode (its batch norms keep their statistics)
    assert not method.segmentor.model.model.pixel_level_module.training
    assert method.segmentor.model.class_predictor.training and method.flow_module.training


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "copy"])
def test_every_variant_trains_and_reduces_the_loss(variant, small_synthetic):
    dataset = load_synthetic(small_synthetic, "train")
    torch.manual_seed(0)
    method = build_method("mpvss:tiny", dataset.num_classes, variant)
    report = train(method, dataset, iterations=25, seed=0, options=QUIET)
    assert report.final_loss < report.first_loss
