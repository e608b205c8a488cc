"""Sparse against dense deformable refinement in TFC, side by side in one run
(`pytest tests/benchmarks --benchmark-only`).

The timed work is what a non-key frame spends on the refinement at MiT-B0 scale (decoder
width 256, 480x853 input, 1/4-resolution points): the value projections of the two
levels that change with the frame, and the deformable attention layer on the selected
points (the levels reused from the key frame were projected on the key frame). Dense
refines every point; sparse the given share of points with the lowest similarity. TFC's
Table 3 reports 1.73x for 20% (522.9 vs 302.6 FPS, MiT-B0, A100, whole model).
"""

import pytest
import torch

from vssbench.methods.base import build_method

FRACTIONS = (0.1, 0.2, 0.4)
PAPER_SPEEDUP_AT_20 = 522.9 / 302.6
_MEDIAN_SECONDS: dict[float, float] = {}  # filled dense first (parameter order), read by the sparse runs


@pytest.fixture(scope="module")
def refinement_input():
    torch.manual_seed(0)
    method = build_method("tfc:b0", 124).eval()
    with torch.inference_mode():
        _, key = method.key_forward(torch.randn(1, 3, 480, 853))
        mixed = [torch.randn_like(z) for z in key.levels[:2]]
        fused = torch.randn_like(key.reused_fuse_terms)
        similarity = torch.rand(1, 1, *fused.shape[-2:])
    return method, key, mixed, fused, similarity


def _refinement_pass(method, key, mixed, fused, similarity, fraction):
    with torch.inference_mode():
        values = [method.refinement.attention.project_values(z) for z in mixed] + key.reused_values
        return method.refine(fused, similarity, values, refine_fraction=fraction)


@pytest.mark.parametrize("fraction", (1.0, *FRACTIONS))
def test_refinement_sparse_vs_dense(benchmark, refinement_input, fraction):
    benchmark.group = "tfc sparse vs dense refinement"
    benchmark.pedantic(_refinement_pass, args=(*refinement_input, fraction), rounds=5, warmup_rounds=1)
    _MEDIAN_SECONDS[fraction] = benchmark.stats.stats.median
    if fraction != 1.0 and 1.0 in _MEDIAN_SECONDS:
        speedup = _MEDIAN_SECONDS[1.0] / _MEDIAN_SECONDS[fraction]
        benchmark.extra_info.update(points=fraction, speedup_over_dense=speedup, paper_speedup_at_20=PAPER_SPEEDUP_AT_20)
        print(f"\nrefinement at {fraction:.0%} of the points: {1000 * _MEDIAN_SECONDS[fraction]:.1f} ms, "
              f"dense {1000 * _MEDIAN_SECONDS[1.0]:.1f} ms: {speedup:.2f}x (paper at 20%: {PAPER_SPEEDUP_AT_20:.2f}x)")


def test_sparse_refinement_agrees_with_dense_on_selected_points(refinement_input):
    """Not timed: the sparse path gives the dense path's features on the points it refines."""
    method, key, mixed, fused, similarity = refinement_input
    dense = _refinement_pass(method, key, mixed, fused, similarity, 1.0)
    sparse = _refinement_pass(method, key, mixed, fused, similarity, 0.2)
    chosen = similarity.flatten().topk(round(0.2 * similarity.numel()), largest=False).indices
    dense_flat, sparse_flat, fused_flat = dense.flatten(2)[0], sparse.flatten(2)[0], fused.flatten(2)[0]
    torch.testing.assert_close(sparse_flat[:, chosen], dense_flat[:, chosen], rtol=1e-5, atol=1e-5)
    untouched = torch.ones(similarity.numel(), dtype=torch.bool)
    untouched[chosen] = False
    assert torch.equal(sparse_flat[:, untouched], fused_flat[:, untouched])
