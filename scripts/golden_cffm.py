"""Make tests/golden/cffm_tiny.pth and cffm_tiny_reference.pt with GuoleiSun/VSS-CFFM's own code.

    python scripts/golden_cffm.py PATH/TO/VSS-CFFM tests/golden

Run in a scratch environment that has torch, mmcv 1.7 (``pip install --no-build-isolation
mmcv==1.7.2``, the build without compiled ops), einops and opencv; never in vssbench's. CFFM's
``mmseg`` asserts mmcv <= 1.3 in its ``__init__`` and its model registry imports modules with compiled
ops, so this script imports only the two files it needs (``backbones/mix_transformer.py``,
``decode_heads/cffm_head.py``) through package stubs; modules those files import but never call on
this path (IPython's ``embed``, ``fast_pytorch_kmeans``, ``attr``, timm's model registry, torchvision for
mmcv.runner's model-zoo URLs) are stubbed,
and timm's three layer helpers (DropPath, unused at drop path 0; to_2tuple; trunc_normal_) are
provided, since timm needs torchvision. None of
CFFM's own code is changed or copied.

What it builds: CFFM's ``MixVisionTransformer`` at tiny widths (16, 32, 48, 64; depths 2, 1, 1, 1;
heads 1..4, as tests/golden's SegFormer) and ``CFFMHead_clips_resize1_8`` (embed_dim 32, depths 2,
num_clips 4, 8 classes, the official focal settings), seeded random weights and batch-norm
statistics, in float64, evaluation mode. References, each the head's test-time output for the target
(EncoderDecoder_clips.encode_decode before its final resize):

* ``video``: 12 frames (3 x 64 x 96; the 1/8 map 8 x 12, not a multiple of the 7 x 7 windows), each
  frame with the clip the official dataset code gives it (:func:`official_clip`): the per-frame
  branch for frames 0-2, the hard-coded clips of frames 3-8, (i-9, i-6, i-3, i) after;
* ``clip_7``: one clip of 4 frames at 112 x 168 (the 1/8 map 14 x 21, a multiple of 7).

The weights are saved as mmseg's ``EncoderDecoder_clips`` state dict (``backbone.*``, ``decode_head.*``).
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch
from torch import nn


def _stub(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def _package(name: str, path: Path) -> None:
    package = _stub(name)
    package.__path__ = [str(path)]


def install_stubs(root: Path, **extra: dict) -> None:
    """Make ``mmseg`` under ``root`` importable file by file (package stubs skip its ``__init__``'s mmcv
    version check and its registry), with the modules its files import but never call on this path
    stubbed; ``extra`` adds stubs (a module name -> its attributes)."""

    class DropPath(nn.Identity):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()

    def to_2tuple(value: object) -> tuple:
        return value if isinstance(value, tuple) else (value, value)

    _package("timm", root)  # stubs: timm itself needs torchvision
    _package("timm.models", root)
    _stub("timm.models.layers", DropPath=DropPath, to_2tuple=to_2tuple, trunc_normal_=nn.init.trunc_normal_)
    _stub("timm.models.registry", register_model=lambda function: function)
    _stub("timm.models.vision_transformer", _cfg=lambda **kwargs: kwargs)
    _stub("torchvision", __version__="0.0")  # mmcv.runner imports it for model-zoo URLs, never used here
    _stub("IPython", embed=lambda *a, **k: None)
    _stub("attr")
    for name, attributes in extra.items():
        _stub(name, **attributes)
    for package in ("mmseg", "mmseg/models", "mmseg/models/backbones", "mmseg/models/decode_heads"):
        _package(package.replace("/", "."), root / package)


def tiny_mit(mix_vision_transformer: type) -> nn.Module:
    """The official MixVisionTransformer at the golden files' widths (16, 32, 48, 64; depths 2, 1, 1, 1),
    NVlabs's layer-norm epsilon 1e-6; built right after ``torch.manual_seed(0)``."""
    torch.manual_seed(0)
    return mix_vision_transformer(embed_dims=[16, 32, 48, 64], num_heads=[1, 2, 3, 4], mlp_ratios=[4, 4, 4, 4],
                                  qkv_bias=True, norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6),
                                  depths=[2, 1, 1, 1], sr_ratios=[8, 4, 2, 1], drop_rate=0.0, drop_path_rate=0.0)


HEAD_ARGUMENTS = dict(feature_strides=[4, 8, 16, 32], in_channels=[16, 32, 48, 64], in_index=[0, 1, 2, 3],
                      channels=128, dropout_ratio=0.1, num_classes=8, norm_cfg=dict(type="BN", requires_grad=True),
                      align_corners=False, num_clips=4,
                      loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))


def build(root: Path) -> tuple[nn.Module, nn.Module]:
    install_stubs(root, fast_pytorch_kmeans=dict(KMeans=object))
    from mmseg.models.backbones.mix_transformer import MixVisionTransformer
    from mmseg.models.decode_heads.cffm_head import CFFMHead_clips_resize1_8

    backbone = tiny_mit(MixVisionTransformer)
    head = CFFMHead_clips_resize1_8(decoder_params=dict(embed_dim=32, depths=2), **HEAD_ARGUMENTS)
    randomise(backbone, head)
    return backbone.double().eval(), head.double().eval()


def randomise(*modules: nn.Module) -> None:
    """Every parameter random (the pooling and the relative-position tables too): weights 0.02 x N(0, 1),
    biases 0.1 x N(0, 1), norm layers' scales 1 + 0.1 x N(0, 1) (so that no path is switched off by a
    near-zero scale and a ReLU), batch-norm statistics uniform."""
    norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)
    for module in modules:
        for submodule in module.modules():
            for name, parameter in submodule.named_parameters(recurse=False):
                scale = isinstance(submodule, norms) and name == "weight"
                parameter.data = (1.0 if scale else 0.0) + torch.randn_like(parameter) * (
                    0.1 if scale or parameter.dim() == 1 else 0.02)
            if isinstance(submodule, nn.BatchNorm2d):
                submodule.running_mean.uniform_(-0.2, 0.2)
                submodule.running_var.uniform_(0.5, 1.5)


def run(backbone: nn.Module, head: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """The head's test-time output for the last frame (EncoderDecoder_clips.encode_decode before its resize)."""
    with torch.no_grad():
        return head(backbone(frames), batch_size=1, num_clips=frames.shape[0])


def official_clip(index: int, length: int) -> list[int]:
    """The frames ``prepare_test_img2`` (mmseg/datasets/custom.py, ``CustomDataset_video2``) gives frame
    ``index`` of a video with ``dilation=[-9, -6, -3]``, transcribed: the in-range references, the frame,
    and the hard-coded clips of frames 3-8."""
    hard_coded = {3: [0, 1, 2, 3], 4: [0, 2, 3, 4], 5: [0, 2, 4, 5], 6: [0, 2, 4, 6], 7: [0, 3, 5, 7], 8: [0, 3, 6, 8]}
    clip = [index + d for d in (-9, -6, -3) if 0 <= index + d < length] + [index]
    return hard_coded.get(index, clip)


def write(out: Path, name: str, source: str, backbone: nn.Module, head: nn.Module,
          extra_clip: tuple[str, tuple[int, ...]]) -> None:
    """``NAME.pth`` (the weights as mmseg's ``EncoderDecoder_clips`` saves them) and ``NAME_reference.pt``:
    a 12-frame video (3 x 64 x 96) each frame with its official clip, and one more clip of 4 frames
    (``extra_clip``: its key and frame size), inputs drawn in float32 (stored so, half the bytes) and
    computed in float64, which they cast to exactly."""
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(12, 3, 64, 96, generator=generator).double()
    key, size = extra_clip
    clip = torch.randn(4, 3, *size, generator=generator).double()
    clips = [official_clip(i, len(video)) for i in range(len(video))]
    reference = {"video": video.float(), "clips": clips,
                 "video_logits": torch.cat([run(backbone, head, video[frames]) for frames in clips]),
                 key: clip.float(), f"{key}_logits": run(backbone, head, clip)}
    state = {**{f"backbone.{k}": v.float() for k, v in backbone.state_dict().items()},
             **{f"decode_head.{k}": v.float() if v.is_floating_point() else v for k, v in head.state_dict().items()}}
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": {"source": source}}, out / f"{name}.pth")
    torch.save(reference, out / f"{name}_reference.pt")
    print({k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in reference.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cffm", type=Path, help="a checkout of GuoleiSun/VSS-CFFM")
    parser.add_argument("out", type=Path, help="where to write cffm_tiny.pth and cffm_tiny_reference.pt")
    args = parser.parse_args()
    write(args.out, "cffm_tiny", "GuoleiSun/VSS-CFFM, scripts/golden_cffm.py", *build(args.cffm),
          extra_clip=("clip_7", (112, 168)))


if __name__ == "__main__":
    main()
