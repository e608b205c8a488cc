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

from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from golden_cffm import HEAD_ARGUMENTS, install_stubs, randomise, tiny_mit, write  # noqa: E402


def build(root: Path) -> tuple[nn.Module, nn.Module]:
    # decode_heads/utils/utils.py builds an unused de-normalising transform at import: any callable does.
    install_stubs(root, **{"torchvision.transforms": dict(Compose=lambda steps: None, Normalize=lambda **kwargs: None)})
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    from mmseg.models.backbones.mix_transformer import MixVisionTransformer
    from mmseg.models.decode_heads.segformer_head import SegFormerHead_clips2_resize_1_8_hypercorrelation2_topk_ensemble4

    backbone = tiny_mit(MixVisionTransformer)
    head = SegFormerHead_clips2_resize_1_8_hypercorrelation2_topk_ensemble4(
        decoder_params=dict(embed_dim=256), hypercorre=True, backbone="b1", **HEAD_ARGUMENTS)
    randomise(backbone, head)
    return backbone.double().eval(), head.double().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mrcfa", type=Path, help="a checkout of GuoleiSun/VSS-MRCFA")
    parser.add_argument("out", type=Path, help="where to write mrcfa_tiny.pth and mrcfa_tiny_reference.pt")
    args = parser.parse_args()
    write(args.out, "mrcfa_tiny", "GuoleiSun/VSS-MRCFA, scripts/golden_mrcfa.py", *build(args.mrcfa),
          extra_clip=("clip_wide", (128, 224)))


if __name__ == "__main__":
    main()
