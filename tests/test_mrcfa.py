"""MRCFA against GuoleiSun/VSS-MRCFA's own code, and its training.

``tests/golden/mrcfa_tiny.pth`` and ``mrcfa_tiny_reference.pt`` were made by ``scripts/golden_mrcfa.py``
from a checkout of the official repository (its docstring says how): tiny MiT widths, the 256-wide
decoder its small decoders require, the wide affinity learner (``backbone='b1'``), float64, a 12-frame
video under the official clip rule and one wider clip. The clip protocol and cache are CFFM's
(tests/test_cffm.py).
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from test_cffm import train_on_blocks

from vssbench.methods.base import build_method
from vssbench.methods.clips import aligned_size
from vssbench.methods.mrcfa import MRCFA
from vssbench.methods.perframe import PerFrame
from vssbench.methods.segmentors import SEGMENTORS, SegFormer
from vssbench.methods.weights import load_weights

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 1e-10
MIT = dict(hidden_sizes=[16, 32, 48, 64], depths=[2, 1, 1, 1], num_attention_heads=[1, 2, 3, 4],
           decoder_hidden_size=256)


@pytest.fixture
def golden(monkeypatch):
    monkeypatch.setitem(SEGMENTORS, "golden-segformer-256", (SegFormer, MIT))
    monkeypatch.setitem(MRCFA.presets, "golden", dict(segmentor="golden-segformer-256", threshold=0.5, wide=True))
    monkeypatch.setitem(PerFrame.presets, "golden-segformer-256", {})
    return torch.load(GOLDEN / "mrcfa_tiny_reference.pt", weights_only=True)


def _loaded(spec: str = "mrcfa:golden"):
    torch.manual_seed(0)
    method = build_method(spec, 8)
    record = load_weights(method, GOLDEN / "mrcfa_tiny.pth")
    return method.double().eval(), record


def _video_error(method, golden) -> torch.Tensor:
    """Per frame, the largest difference to the official output (which the method returns upsampled to the
    frame, as mmseg's encode_decode does next)."""
    method.reset()
    errors = []
    with torch.no_grad():
        for frame, expected in zip(golden["video"].double(), golden["video_logits"]):
            ours = method.step(frame[None], True)
            expected = F.interpolate(expected[None], size=ours.shape[2:], mode="bilinear", align_corners=False)
            errors.append((ours - expected).abs().max())
    return torch.stack(errors)


def test_the_official_checkpoint_loads_whole_and_computes_what_mrcfa_computes(golden):
    method, record = _loaded()
    assert (record.format, record.component, record.module) == ("mrcfa", "method", "")
    assert record.mapped == len(method.state_dict()) and not record.missing
    assert set(record.dropped) == {"mmseg 0.x BaseDecodeHead's conv_seg, which SegFormerHead never calls"}
    error = _video_error(method, golden)
    assert error.max() < TOLERANCE, error
    with torch.no_grad():  # 1/32 maps of 4 x 7: 14 reference positions kept of 28
        out, _ = method.refine([method.per_frame(frame[None]) for frame in golden["clip_wide"].double()])
    assert (out - golden["clip_wide_logits"]).abs().max() < TOLERANCE


@pytest.mark.parametrize("name", ["hypercorre_module.hpn.encoder_layer3to2.0.conv2.weight",
                                  "hypercorre_module.k2.bias", "sr1_feat.weight", "deco4.1.bias"])
def test_a_perturbed_head_weight_is_seen(golden, name):
    method, _ = _loaded()
    with torch.no_grad():
        method.get_parameter(name).add_(1e-3)
    assert _video_error(method, golden).max() > 100 * TOLERANCE


def test_the_checkpoint_still_gives_perframe_its_segformer_branch(golden):
    method, record = _loaded("perframe:golden-segformer-256")
    assert (record.format, record.component) == ("mrcfa", "segmentor")
    with torch.no_grad():
        logits = method.step(golden["video"][:3].double(), True)
    expected = F.interpolate(golden["video_logits"][:3], size=logits.shape[2:], mode="bilinear", align_corners=False)
    assert (logits - expected).abs().max() < TOLERANCE


def test_frames_are_aligned_to_32_and_scored_back_at_their_size():
    torch.manual_seed(0)
    method = build_method("mrcfa:tiny", 8).eval()
    assert aligned_size(480, 853, 32) == (480, 864)
    with torch.no_grad():
        outputs = [method.step(torch.randn(1, 3, 60, 100), True) for _ in range(5)]
    assert all(o.shape[2:] == (64, 128) for o in outputs)  # the runner resizes them to the label


def test_training_reaches_every_part_and_lowers_the_loss():
    torch.manual_seed(0)
    losses = train_on_blocks(build_method("mrcfa:tiny", 3).train(), {"clip": 0.5, "target": 1.0},
                             ("segmentor.model.segformer", "hypercorre_module.hpn", "hypercorre_module.k3", "sr2",
                              "sr1_feat", "deco1", "deco4"))
    assert losses[-1] < 0.6 * losses[0]
