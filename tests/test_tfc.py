import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vssbench.benchmark.profiler import count_flops
from vssbench.benchmark.training import TrainingClips
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import METHODS, build_method
from vssbench.methods.weights import CheckpointError
from vssbench.methods.msda import MultiScaleDeformableAttention, pixel_centres
from vssbench.datasets.base import IGNORE_INDEX
from vssbench.methods import tfc as tfc_module
from vssbench.methods.tfc import (
    VARIANTS,
    cosine_similarity_map,
    focal_consistency_loss,
    label_consistency,
    unit_features,
)
from vssbench.recipes import load, recipe_for


def _pyramid(batch: int, dim: int, sizes=((12, 20), (6, 10), (3, 5), (2, 3))) -> list[torch.Tensor]:
    return [torch.randn(batch, dim, h, w) for h, w in sizes]


def test_deformable_attention_samples_pixel_centres_exactly():
    """Zero offsets, uniform weights and identity projections: each query returns the mean
    over levels of the value pixels that contain its reference point."""
    attention = MultiScaleDeformableAttention(dim=4, heads=2, levels=2, points=3)
    with torch.no_grad():
        attention.sampling_offsets.bias.zero_()
        for layer in (attention.value_proj, attention.output_proj):
            layer.weight.copy_(torch.eye(4))
            layer.bias.zero_()
    fine, coarse = torch.randn(1, 4, 4, 6), torch.randn(1, 4, 2, 3)
    references = pixel_centres(4, 6)  # every fine pixel
    values = [attention.project_values(fine), attention.project_values(coarse)]
    output = attention(torch.randn(1, 24, 4), references[None], values)[0]
    # Fine pixel (y, x) is inside coarse pixel (y // 2, x // 2); bilinear sampling at the
    # fine centre mixes coarse pixels, so compare with grid_sample's own answer for the coarse level.
    grid = (2 * references - 1).view(1, 4, 6, 2)
    coarse_at_centres = F.grid_sample(coarse, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    expected = (fine + coarse_at_centres)[0].flatten(1).t() / 2
    torch.testing.assert_close(output, expected)


def test_sparse_deformable_attention_equals_dense_on_the_selected_points():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(dim=16, heads=4, levels=4, points=4)
    with torch.no_grad():
        attention.sampling_offsets.weight.normal_(std=0.5)  # query-dependent offsets and weights
        attention.attention_weights.weight.normal_(std=0.5)
    values = [attention.project_values(level) for level in _pyramid(1, 16)]
    queries, references = torch.randn(1, 240, 16), pixel_centres(12, 20)[None]
    dense = attention(queries, references, values)
    selected = torch.tensor([3, 17, 18, 100, 239])
    sparse = attention(queries[:, selected], references[:, selected], values)
    # Equal up to float32 rounding: the linear layers' matrix products block differently
    # for 5 and 240 rows on multi-threaded BLAS; sampling and weighting are per point.
    torch.testing.assert_close(sparse, dense[:, selected], rtol=1e-6, atol=1e-6)


def test_identical_frames_have_similarity_one_and_the_key_output():
    torch.manual_seed(0)
    method = build_method("tfc:tiny", 8).eval()
    frame = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        key_scores = method.step(frame, True)
        _, similarity = method.nonkey_forward(frame, method._key)
        nonkey_scores = method.step(frame, False)
    torch.testing.assert_close(similarity, torch.ones_like(similarity), rtol=0, atol=1e-6)
    torch.testing.assert_close(nonkey_scores, key_scores, rtol=0, atol=1e-5)


def test_cosine_similarity_map_is_the_per_point_cosine():
    key, current = torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7)
    expected = F.cosine_similarity(key, current, dim=1)[:, None]
    got = cosine_similarity_map(unit_features(key, (5, 7)), unit_features(current, (5, 7)))
    torch.testing.assert_close(got, expected)


def test_focal_consistency_loss_by_hand():
    similarity = torch.tensor([[[[0.9, 0.2], [0.5, 1.5]]]])  # 1.5 clamps to 1 - 1e-6
    key_label = torch.tensor([[[1, 2], [3, 255]]])
    label = torch.tensor([[[1, 2], [4, 0]]])
    # same, same, different; the void pixel is excluded. gamma = 1.
    p = torch.tensor([0.9, 0.2, 0.5])
    expected = -torch.stack([(1 - p[0]) * p[0].log(), (1 - p[1]) * p[1].log(), p[2] * (1 - p[2]).log()]).mean()
    torch.testing.assert_close(focal_consistency_loss(similarity, key_label, label), expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs_deterministically_with_full_size_scores(variant):
    scores = []
    for _ in range(2):
        torch.manual_seed(0)
        method = build_method("tfc:tiny", 8, variant).eval()
        frames = torch.randn(3, 1, 3, 64, 96)
        with torch.no_grad():
            scores.append([method.step(frames[t], t == 0) for t in range(3)])
    assert all(s.shape == (1, 8, 64, 96) for s in scores[0])
    assert all(torch.equal(a, b) for a, b in zip(*scores))
    if VARIANTS[variant].mixing != "flow-warp":  # the other variants' non-key path differs from a fresh key frame
        assert not torch.allclose(scores[0][1], method.step(frames[1], True))


def test_nonkey_path_skips_stages_3_and_4():
    method = build_method("tfc:tiny", 8).eval()
    calls = []
    for index, stage in enumerate(method.segmentor.model.segformer.stages):
        stage.register_forward_hook(lambda *_, index=index: calls.append(index))
    with torch.no_grad():
        method.step(torch.randn(1, 3, 64, 96), True)
        key_calls, calls[:] = list(calls), []
        method.step(torch.randn(1, 3, 64, 96), False)
    assert key_calls == [0, 1, 2, 3] and calls == [0, 1]


def test_b0_parameters_the_encoder_layer_default_and_eq_9_as_printed_and_nonkey_frames_cost_less():
    segformer = sum(p.numel() for p in build_method("perframe:segformer-b0", 124).parameters())
    added = {variant: (sum(p.numel() for p in build_method("tfc:b0", 124, variant).parameters()) - segformer) / 1e6
             for variant in ("sparse-msda-0.8", "sparse-msda-0.8-attention")}
    assert added["sparse-msda-0.8"] == pytest.approx(0.76, abs=0.01)  # the encoder layer: TFC Table 1's "+0.7M"
    assert added["sparse-msda-0.8-attention"] == pytest.approx(0.23, abs=0.01)  # deformable attention alone (Eq. 9)
    tfc = build_method("tfc:b0", 124).eval()
    paths = tfc.cost_paths(torch.randn(1, 3, 480, 853))  # the acceptance resolution (VSPW)
    key, _ = count_flops(tfc, paths["key"])
    nonkey, _ = count_flops(tfc, paths["nonkey"])
    assert nonkey < key


def _with_similarity(monkeypatch, make):
    """Replace Eq. 5-6's similarity map by ``make(similarity)``."""
    real = tfc_module.cosine_similarity_map
    monkeypatch.setattr(tfc_module, "cosine_similarity_map", lambda key, current: make(real(key, current)))


@pytest.mark.parametrize("variant", ["sparse-msda-0.8", "sparse-msda-0.8-attention", "linear-interp"])
def test_with_w_1_the_nonkey_output_is_the_key_output_wherever_no_point_is_refined(monkeypatch, variant):
    torch.manual_seed(0)
    method = build_method("tfc:tiny", 8, variant).eval()
    key_frame, frame = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    refined = torch.zeros(1, 1, 16, 24, dtype=torch.bool)
    refined[..., 3:6, 4:9] = True  # these points get w = 0.5 < 0.8: mixed and, with the refinement, refined

    _with_similarity(monkeypatch, lambda similarity: torch.where(refined, 0.5, torch.ones_like(similarity)))
    with torch.no_grad():
        key_logits, state = method.key_forward(key_frame)
        logits, _ = method.nonkey_forward(frame, state)
    kept = (~refined).expand_as(logits)
    torch.testing.assert_close(logits[kept], key_logits[kept], rtol=0, atol=1e-6)
    assert not torch.allclose(logits[~kept], key_logits[~kept])


def _with_its_feature_reuse_twin(variant: str):
    """``variant`` and ``feature-reuse`` with the same weights, in evaluation mode, and a key and a current frame."""
    torch.manual_seed(0)
    method = build_method("tfc:tiny", 8, variant).eval()
    reuse = build_method("tfc:tiny", 8, "feature-reuse").eval()
    reuse.load_state_dict(method.state_dict())
    return method, reuse, torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)


def test_with_w_0_the_nonkey_output_is_the_feature_reuse_path(monkeypatch):
    method, reuse, key_frame, frame = _with_its_feature_reuse_twin("linear-interp")
    _with_similarity(monkeypatch, torch.zeros_like)
    with torch.no_grad():
        expected, _ = reuse.nonkey_forward(frame, reuse.key_forward(key_frame)[1])
        logits, _ = method.nonkey_forward(frame, method.key_forward(key_frame)[1])
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def test_consistency_targets_one_pixel_per_cell_or_any_change_in_the_cell():
    key_label = torch.zeros(1, 4, 4, dtype=torch.long)
    label = key_label.clone()
    label[0, 3, 3] = 5  # a change in the corner of the bottom-right 2x2 cell, not at its nearest pixel
    label[0, 0, 0] = IGNORE_INDEX  # the top-left cell's nearest pixel is void
    same, valid = label_consistency(key_label, label, torch.Size([2, 2]), "nearest")
    assert same.tolist() == [[[False, True], [True, True]]] and valid.tolist() == [[[False, True], [True, True]]]
    same, valid = label_consistency(key_label, label, torch.Size([2, 2]), "cell")
    assert same.tolist() == [[[True, True], [True, False]]] and valid.all()


def test_fixed_interp_weights_the_key_frame_0_9():
    method, reuse, key_frame, frame = _with_its_feature_reuse_twin("fixed-interp")
    with torch.no_grad():
        key_logits, state = method.key_forward(key_frame)
        logits, similarity = method.nonkey_forward(frame, state)
        current, _ = reuse.nonkey_forward(frame, reuse.key_forward(key_frame)[1])
    # The classifier is affine: logits of 0.9 z_k + 0.1 z_t are 0.9 / 0.1 of the two frames' logits.
    torch.testing.assert_close(logits, 0.9 * key_logits + 0.1 * current, rtol=0, atol=1e-5)
    assert similarity is None and method.dropped_loss_terms() == {
        "focal_consistency": "fixed-interp does not use the similarity map w_t"}


def test_the_loss_is_eq_12_the_average_of_the_cross_entropies_plus_the_focal_term(small_synthetic):
    from vssbench.benchmark.training import loss_weights, weighted_loss

    dataset = load_synthetic(small_synthetic, "train")
    torch.manual_seed(0)
    method = build_method("tfc:tiny", dataset.num_classes)
    clips = TrainingClips(dataset, load("tfc", "vspw"), 2, seed=0)
    batch = {k: torch.stack([clips[i][k] for i in range(2)]) for k in ("frames", "labels")}
    terms = method.loss(batch)
    for recipe in (load("tfc", "vspw"), load("tfc", "synthetic")):
        loss = weighted_loss(terms, loss_weights(method, recipe), method)
        expected = 0.5 * (terms["cross_entropy_key"] + terms["cross_entropy_nonkey"]) + terms["focal_consistency"]
        torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_sparse_path_flops_scale_with_the_refined_share():
    method = build_method("tfc:tiny", 8).eval()
    frame = torch.randn(1, 3, 128, 224)
    with torch.no_grad():
        _, key = method.key_forward(frame)
    flops = {f: count_flops(method, lambda f=f: method.nonkey_forward(frame, key, refine_fraction=f)[0])[0]
             for f in (0.1, 0.2, 0.4)}
    per_tenth = flops[0.2] - flops[0.1]
    assert per_tenth > 0
    assert flops[0.4] - flops[0.2] == pytest.approx(2 * per_tenth, rel=0.01)


@pytest.mark.slow
def test_training_reduces_both_losses(small_synthetic):
    torch.manual_seed(0)
    dataset = load_synthetic(small_synthetic, "train")
    method = build_method("tfc:tiny", dataset.num_classes).train()
    clips = TrainingClips(dataset, recipe_for(method, dataset.name, "synthetic"), length=8 * 60, seed=0)
    loader = torch.utils.data.DataLoader(clips, batch_size=8)
    optimizer = torch.optim.AdamW(method.parameters(), lr=2e-3)
    history = []
    for batch in loader:
        terms = method.loss(batch)
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
        history.append({k: v.item() for k, v in terms.items()})
    for term in ("cross_entropy_nonkey", "focal_consistency"):
        first = sum(h[term] for h in history[:10]) / 10
        last = sum(h[term] for h in history[-10:]) / 10
        assert last < 0.8 * first, (term, first, last)


def _script(name: str):
    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tfc_without_consistency_registered():
    """scripts/tfc_without_consistency_loss.py imported, its method unregistered afterwards."""
    yield _script("tfc_without_consistency_loss")
    METHODS.pop("tfc-no-consistency")


def test_the_ablation_script_drops_only_the_consistency_term(small_synthetic, tfc_without_consistency_registered):
    dataset = load_synthetic(small_synthetic, "train")
    clips = TrainingClips(dataset, load("tfc", "synthetic"), length=2, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(clips, batch_size=2)))
    torch.manual_seed(0)
    full = build_method("tfc:tiny", dataset.num_classes, variant="linear-interp").eval()
    torch.manual_seed(0)
    ablated = build_method("tfc-no-consistency:tiny", dataset.num_classes, variant="linear-interp").eval()
    full_terms, ablated_terms = full.loss(batch), ablated.loss(batch)
    assert set(full_terms) - set(ablated_terms) == {"focal_consistency"}
    assert all(torch.equal(value, full_terms[name]) for name, value in ablated_terms.items())


def test_weight_oracle_rows_reduce_to_the_method_where_they_must(small_synthetic):
    """scripts/tfc_weight_oracle.py: w = 0 is exactly the feature-reuse path, and with every frame
    a key frame the weight is never used, so every row is the key path."""
    oracle = _script("tfc_weight_oracle")
    torch.manual_seed(0)
    dataset = load_synthetic(small_synthetic, "val")
    reuse, similarity = oracle.oracle_metrics(build_method("tfc:tiny", dataset.num_classes, variant="feature-reuse"),
                                              dataset, 4)
    assert reuse["learned"]["per_class_iou"] == reuse["current"]["per_class_iou"]
    assert reuse["key"]["miou"] != reuse["current"]["miou"]
    # Only non-key points are counted: most keep their label, some change it.
    assert similarity.stayed > similarity.changed > 0
    assert 0.0 <= similarity.changed_sum / similarity.changed <= 1.0
    every_key, similarity = oracle.oracle_metrics(build_method("tfc:tiny", dataset.num_classes), dataset, 1)
    assert all(summary == every_key["learned"] for summary in every_key.values())
    assert similarity.stayed == similarity.changed == 0


def test_b2_to_b5_refine_at_256_on_mmsegs_segformer_and_their_key_path_is_it():
    segformer = sum(p.numel() for p in build_method("perframe:segformer-b5-mmseg", 124).parameters())
    tfc = build_method("tfc:b5", 124)
    assert tfc.segmentor.head == "mmseg" and tfc.segmentor.config.decoder_hidden_size == 256
    assert (sum(p.numel() for p in tfc.parameters()) - segformer) / 1e6 == pytest.approx(0.76, abs=0.01)
    torch.manual_seed(0)
    method = build_method("tfc:b2", 8).eval()
    per_frame = build_method("perframe:segformer-b2-mmseg", 8).eval()
    per_frame.segmentor.load_state_dict(method.segmentor.state_dict())
    frame = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(method.step(frame, True), per_frame.step(frame, True), rtol=0, atol=1e-5)
        assert method.step(frame, False).shape == (1, 8, 64, 96)


@pytest.mark.parametrize("layout", ["princeton_small", "torchvision_small"])
def test_flow_warp_raft_loads_raft_weights_of_either_layout_and_warps_with_raft_flow(layout, tmp_path):
    """The paper's "Flow-guided Warping" row cites RAFT: tfc:tiny's flow-warp-raft takes RAFT-small weights
    (--init flow=PATH), computes RAFT's flow on the frames with the ImageNet normalisation undone, and warps
    the key frame's levels 3-4 with it; the FlowNetS variant stays ``flow-warp``."""
    import importlib.util
    import json
    from pathlib import Path

    from vssbench.methods.raft import RAFT, frame_flow, load_raft
    from vssbench.methods.weights import load_weights

    spec = importlib.util.spec_from_file_location("golden_raft", Path(__file__).parents[1] / "scripts" / "golden_raft.py")
    golden_raft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden_raft)
    keys = json.loads((Path(__file__).parent / "golden" / "raft" / layout / "keys.json").read_text())
    path = tmp_path / "raft.pth"
    torch.save({k: v.float() if v.is_floating_point() else v
                for k, v in golden_raft.golden_state(keys, golden_raft.SEED[layout]).items()}, path)
    torch.manual_seed(0)
    method = build_method("tfc:tiny", 8, "flow-warp-raft").eval()
    record = load_weights(method, path, component="flow", purpose="train")
    assert record.format == ("raft" if layout.startswith("princeton") else "torchvision-raft")
    assert isinstance(method.flownet, RAFT) and method.weight_components()["flow"] == "flownet"
    frames = torch.randn(2, 1, 3, 128, 160)
    reference = load_raft(path)[0]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = method.flownet(frames[1], frames[0])
        expected = frame_flow(reference, *((f * std + mean) * 255.0 for f in (frames[1], frames[0])), iters=12)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
        key = method.step(frames[0], True)
        warped = method.step(frames[1], False)
        flownets = build_method("tfc:tiny", 8, "flow-warp")
        assert not isinstance(flownets.flownet, RAFT)
    assert torch.isfinite(warped).all() and not torch.allclose(key, warped)
    with pytest.raises(CheckpointError, match="RAFT-small weights .*the flow network here is RAFT-large"):
        load_weights(build_method("tfc:b0", 8, "flow-warp-raft"), path, component="flow", purpose="train")


def test_flow_warp_raft_costs_are_counted_and_exceed_feature_reuses():
    """RAFT's pyramid pools by averaging (no multiply-add under the convention, as max pooling); its
    convolutions and correlation are counted, so the non-key path costs more than feature reuse."""
    costs = {}
    for variant in ("flow-warp-raft", "feature-reuse"):
        torch.manual_seed(0)
        method = build_method("tfc:tiny", 8, variant).eval()
        paths = method.cost_paths(torch.randn(1, 3, 128, 224))
        costs[variant] = count_flops(method, paths["nonkey"])[0]
    assert costs["flow-warp-raft"] > 5 * costs["feature-reuse"]


def test_flow_warp_raft_trains_raft_through_the_warp(small_synthetic):
    torch.manual_seed(0)
    method = build_method("tfc:tiny", 8, "flow-warp-raft").train()
    frames = torch.randn(1, 2, 3, 64, 96)
    terms = method.loss({"frames": frames, "labels": torch.randint(0, 8, (1, 2, 64, 96))})
    sum(terms.values()).backward()
    for name in ("flownet.update_block.flow_head.conv2.weight", "flownet.fnet.conv1.weight"):
        assert method.get_parameter(name).grad.abs().sum() > 0, name
