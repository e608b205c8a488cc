"""Make tests/golden/mrcfa_tiny.pth and mrcfa_tiny_reference.pt with GuoleiSun/VSS-MRCFA's own code.

    python scripts/golden_mrcfa.py PATH/TO/VSS-MRCFA tests/golden

The scratch environment and the import stubs are those of ``scripts/golden_cffm.py`` (whose helpers
this script uses). What it builds: MRCFA's ``MixVisionTransformer`` at tiny widths (16, 32, 48, 64;
depths 2, 1, 1, 1) and ``SegFormerHead_clips2_resize_1_8_hypercorrelation2_topk_ensemble4`` with
``backbone='b1'`` (the wide affinity learner, token threshold 0.5), embed_dim 256 (its small decoders
are 256 wide whatever the embedding, so no smaller width runs), 8 classes, seeded random weights and
batch-norm statistics, float64, evaluation mode. References, the head's test-time output for the target:

* ``video``: 12 frames of 3 x 64 x 96 (1/32 maps 2 x 3, 3 reference positions kept), each frame with
  the clip the official dataset code gives it;
* ``clip_wide``: one clip of 4 frames at 128 x 224 (1/32 maps 4 x 7, 14 kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from golden_cffm import _package, _stub, official_clip, randomise  # noqa: E402


def import_mrcfa(root: Path) -> tuple[type, type]:
    class DropPath(nn.Identity):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()

    _package("timm", root)
    _package("timm.models", root)
    _stub("timm.models.layers", DropPath=DropPath, to_2tuple=lambda v: v if isinstance(v, tuple) else (v, v),
          trunc_normal_=nn.init.trunc_normal_)
    _stub("timm.models.registry", register_model=lambda function: function)
    _stub("timm.models.vision_transformer", _cfg=lambda **kwargs: kwargs)
    # decode_heads/utils/utils.py builds an unused de-normalising transform at import: any callable does.
    _stub("torchvision", __version__="0.0",
          transforms=_stub("torchvision.transforms", Compose=lambda steps: None, Normalize=lambda **kwargs: None))
    _stub("IPython", embed=lambda *a, **k: None)
    _stub("attr")
    _package("mmseg", root / "mmseg")
    _package("mmseg.models", root / "mmseg" / "models")
    _package("mmseg.models.backbones", root / "mmseg" / "models" / "backbones")
    _package("mmseg.models.decode_heads", root / "mmseg" / "models" / "decode_heads")
    from mmseg.models.backbones.mix_transformer import MixVisionTransformer
    from mmseg.models.decode_heads.segformer_head import SegFormerHead_clips2_resize_1_8_hypercorrelation2_topk_ensemble4

    return MixVisionTransformer, SegFormerHead_clips2_resize_1_8_hypercorrelation2_topk_ensemble4


def build(root: Path) -> tuple[nn.Module, nn.Module]:
    MixVisionTransformer, Head = import_mrcfa(root)
    torch.manual_seed(0)
    backbone = MixVisionTransformer(embed_dims=[16, 32, 48, 64], num_heads=[1, 2, 3, 4], mlp_ratios=[4, 4, 4, 4],
                                    qkv_bias=True, norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6),
                                    depths=[2, 1, 1, 1], sr_ratios=[8, 4, 2, 1], drop_rate=0.0, drop_path_rate=0.0)
    head = Head(feature_strides=[4, 8, 16, 32], in_channels=[16, 32, 48, 64], in_index=[0, 1, 2, 3], channels=128,
                dropout_ratio=0.1, num_classes=8, norm_cfg=dict(type="BN", requires_grad=True), align_corners=False,
                decoder_params=dict(embed_dim=256), num_clips=4, hypercorre=True, backbone="b1",
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    randomise(backbone, head)
    return backbone.double().eval(), head.double().eval()


def run(backbone: nn.Module, head: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return head(backbone(frames), batch_size=1, num_clips=frames.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mrcfa", type=Path, help="a checkout of GuoleiSun/VSS-MRCFA")
    parser.add_argument("out", type=Path, help="where to write mrcfa_tiny.pth and mrcfa_tiny_reference.pt")
    args = parser.parse_args()
    backbone, head = build(args.mrcfa)
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(12, 3, 64, 96, generator=generator).double()
    clip_wide = torch.randn(4, 3, 128, 224, generator=generator).double()
    clips = [official_clip(i, len(video)) for i in range(len(video))]
    reference = {"video": video.float(), "clips": clips,
                 "video_logits": torch.cat([run(backbone, head, video[clip]) for clip in clips]),
                 "clip_wide": clip_wide.float(), "clip_wide_logits": run(backbone, head, clip_wide)}
    state = {**{f"backbone.{k}": v.float() for k, v in backbone.state_dict().items()},
             **{f"decode_head.{k}": v.float() if v.is_floating_point() else v for k, v in head.state_dict().items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": {"source": "GuoleiSun/VSS-MRCFA, scripts/golden_mrcfa.py"}},
               args.out / "mrcfa_tiny.pth")
    torch.save(reference, args.out / "mrcfa_tiny_reference.pt")
    print({k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in reference.items()})


if __name__ == "__main__":
    main()
