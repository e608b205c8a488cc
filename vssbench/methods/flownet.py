"""FlowNetS (Dosovitskiy et al., ICCV 2015) as DFF, Accel and MPVSS use it, in three pieces.

* :class:`FlowNetSEncoder`: ten strided/plain 3x3..7x7 convolutions with LeakyReLU(0.1)
  on the 6-channel (current, key) pair, giving maps at 1/4 .. 1/64 of its input
  (conv2 .. conv6). MPVSS's motion encoder is exactly this network.
* :class:`CoarseToFineFlowDecoder`: FlowNetS's refinement: from the coarsest map, predict
  flow, upsample it and the features (transposed convolutions), concatenate with the next
  finer map, repeat down to conv2. Its channels are parameters: FlowNetS feeds it the raw
  encoder maps, MPVSS the three coarsest maps after its transformer has refined them.
* :class:`FlowNetS`: encoder + decoder + the final flow layer; the full network has
  38.68M parameters (mmtracking's ``FlowNetSimple``).

Input convention, that of FlowNetPytorch, mmtracking and MPVSS alike: RGB frames in [0, 1]
centred by (0.411, 0.432, 0.450), the pair concatenated as (current, key), which gives the
flow from the current frame to the key frame (what backward warping of key features needs),
resized by ``image_scale`` (0.5). A method whose segmentor pads its input (Mask2Former) pads
the pair alike before calling, as the official MPVSS code does. Flow is returned on the
network's own grid (1/4 of the resized input) in pixels of that grid: the raw prediction
times ``flow_scale``. FlowNetPytorch trains the raw prediction as flow / ``div_flow`` (20) in
pixels of the input, so its weights take ``flow_scale = div_flow / 4`` (5); mmtracking's
``flow_scale_factor`` 5 is the same number. :func:`vssbench.methods.warp.flow_warp` rescales
the flow to whatever it warps.

Weights: FlowNetPytorch's ``flownets*.pth.tar`` (:func:`from_flownetpytorch`) and mmtracking's
``flownet_simple.pth`` (:func:`from_mmtracking`), both trained on FlyingChairs; MPVSS's motion
encoder takes their encoder part (:func:`encoder_only`).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from vssbench.methods.keymap import Converted, rename, strip_prefix

FLOW_IMAGE_MEAN = (0.411, 0.432, 0.450)
FLOWNETS_WIDTHS = (64, 128, 256, 512, 512, 1024)  # conv1 .. conv6
FLOWNETS_DECONV = (64, 128, 256, 512)  # deconv2 .. deconv5 outputs
# FlowNetS constructor arguments the methods' presets use: the full network, and the
# narrow one of the CPU-sized `tiny` presets.
FLOWNETS_FULL: dict = {}
FLOWNETS_TINY = dict(widths=(16, 32, 32, 64, 64, 64), deconv=(16, 32, 32, 32))


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2),
                         nn.LeakyReLU(0.1, inplace=True))


def _crop_like(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return x[:, :, : reference.shape[2], : reference.shape[3]]


class FlowNetSEncoder(nn.Module):
    """conv1 (7x7), conv2 (5x5), conv3 (5x5 + 3x3), conv4..conv6 (3x3 + 3x3), all stride 2 then 1."""

    def __init__(self, widths: tuple[int, ...] = FLOWNETS_WIDTHS) -> None:
        super().__init__()
        kernels, repeats = (7, 5, 5, 3, 3, 3), (1, 1, 2, 2, 2, 2)
        stages, in_channels = [], 6
        for width, kernel, repeat in zip(widths, kernels, repeats):
            layers = [_conv(in_channels, width, kernel, 2)]
            layers += [_conv(width, width, 3, 1) for _ in range(repeat - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(widths[1:])

    def forward(self, pair: torch.Tensor) -> list[torch.Tensor]:
        """(B, 6, H, W) -> [conv2 (1/4), conv3, conv4, conv5, conv6 (1/64)]."""
        outputs, x = [], pair
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs[1:]


class CoarseToFineFlowDecoder(nn.Module):
    """FlowNetS's refinement over maps at 1/4 .. 1/64; returns the concatenated finest features.

    ``level_channels`` are the channels of the maps from finest to coarsest;
    ``deconv_channels`` the outputs of the transposed convolutions into each finer level.
    """

    def __init__(self, level_channels: tuple[int, ...], deconv_channels: tuple[int, ...]) -> None:
        super().__init__()
        levels = len(level_channels)
        # Input of the refinement step at level i: the coarsest map itself, else [map_i, deconv, upflow].
        inputs = [level_channels[i] + deconv_channels[i] + 2 for i in range(levels - 1)] + [level_channels[-1]]
        self.predict = nn.ModuleList(nn.Conv2d(inputs[i], 2, 3, 1, 1, bias=False) for i in range(1, levels))
        self.deconv = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(inputs[i + 1], deconv_channels[i], 4, 2, 1, bias=False),
                          nn.LeakyReLU(0.1, inplace=True))
            for i in range(levels - 1))
        self.upsample_flow = nn.ModuleList(nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False) for _ in range(levels - 1))
        self.out_channels = inputs[0]

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        features = maps[-1]
        for i in range(len(maps) - 2, -1, -1):
            flow = self.predict[i](features)
            upflow = _crop_like(self.upsample_flow[i](flow), maps[i])
            upfeatures = _crop_like(self.deconv[i](features), maps[i])
            features = torch.cat((maps[i], upfeatures, upflow), dim=1)
        return features


def prepare_pair(current: torch.Tensor, key: torch.Tensor, image_scale: float) -> torch.Tensor:
    """ImageNet-normalised frames -> FlowNet input: [0, 1] minus the flow mean, (current, key), resized."""
    mean = torch.tensor(IMAGENET_MEAN, device=current.device, dtype=current.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=current.device, dtype=current.dtype).view(1, 3, 1, 1)
    flow_mean = torch.tensor(FLOW_IMAGE_MEAN, device=current.device, dtype=current.dtype).view(1, 3, 1, 1)
    pair = torch.cat([current * std + mean - flow_mean, key * std + mean - flow_mean], dim=1)
    if image_scale != 1.0:
        pair = F.interpolate(pair, scale_factor=image_scale, mode="bilinear", align_corners=False)
    return pair


class FlowNetS(nn.Module):
    """FlowNetS: flow from the current frame to the key frame, at 1/4 of the resized pair."""

    def __init__(self, widths: tuple[int, ...] = FLOWNETS_WIDTHS, deconv: tuple[int, ...] = FLOWNETS_DECONV,
                 image_scale: float = 0.5, flow_scale: float = 5.0) -> None:
        super().__init__()
        self.image_scale = image_scale
        self.flow_scale = flow_scale
        self.encoder = FlowNetSEncoder(widths)
        self.decoder = CoarseToFineFlowDecoder(self.encoder.out_channels, deconv)
        self.predict_flow = nn.Conv2d(self.decoder.out_channels, 2, 3, 1, 1, bias=False)

    def conventions(self) -> dict:
        """The numerical convention of the weights this network holds (module docstring)."""
        return {"flow_scale": self.flow_scale}

    def set_conventions(self, conventions: dict) -> None:
        self.flow_scale = float(conventions.get("flow_scale", self.flow_scale))

    def forward(self, current: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """(B, 2, H/8, W/8) flow in pixels of its own grid (x, y) for ``image_scale`` 0.5."""
        return self.flow_and_features(current, key)[0]

    def flow_and_features(self, current: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow and the decoder's finest features it is predicted from (DFF's scale map reads them)."""
        features = self.decoder(self.encoder(prepare_pair(current, key, self.image_scale)))
        return self.predict_flow(features) * self.flow_scale, features


# --------------------------------------------------------------------------- weights
# FlowNetPytorch: conv1, conv2, conv3, conv3_1, ..., conv6_1 (Sequential(conv, LeakyReLU)), deconv2..5,
# predict_flow2..6, upsampled_flow{n}_to_{n-1}. mmtracking: conv{i}.{j}.conv, deconv{n}.conv,
# predict_flow{n}.conv, upsample_flow{n}.conv, predict_flow.conv. Ours: encoder.stages.{i}.{j}.0,
# decoder.deconv.{n-2}.0, decoder.predict.{n-3}, decoder.upsample_flow.{n-3 or n-2}, predict_flow.

_FLOWNETPYTORCH_RULES = [
    (r"^conv(\d)\.0\.", lambda m: f"encoder.stages.{int(m.group(1)) - 1}.0.0."),
    (r"^conv(\d)_1\.0\.", lambda m: f"encoder.stages.{int(m.group(1)) - 1}.1.0."),
    (r"^deconv(\d)\.0\.", lambda m: f"decoder.deconv.{int(m.group(1)) - 2}.0."),
    (r"^predict_flow2\.", "predict_flow."),
    (r"^predict_flow(\d)\.", lambda m: f"decoder.predict.{int(m.group(1)) - 3}."),
    (r"^upsampled_flow(\d)_to_\d\.", lambda m: f"decoder.upsample_flow.{int(m.group(1)) - 3}."),
]
_MMTRACKING_RULES = [
    (r"^conv(\d)\.(\d)\.conv\.", lambda m: f"encoder.stages.{int(m.group(1)) - 1}.{m.group(2)}.0."),
    (r"^deconv(\d)\.conv\.", lambda m: f"decoder.deconv.{int(m.group(1)) - 2}.0."),
    (r"^predict_flow\.conv\.", "predict_flow."),
    (r"^predict_flow(\d)\.conv\.", lambda m: f"decoder.predict.{int(m.group(1)) - 3}."),
    (r"^upsample_flow(\d)\.conv\.", lambda m: f"decoder.upsample_flow.{int(m.group(1)) - 2}."),
]


def from_flownetpytorch(state: dict[str, torch.Tensor], div_flow: float = 20.0) -> Converted:
    """FlowNetPytorch's ``flownets`` (no batch norm) -> :class:`FlowNetS`, with ``flow_scale = div_flow / 4``."""
    if any(re.match(r"conv1\.1\.running_mean$", key) for key in state):
        raise ValueError("this is FlowNetPytorch's flownets_bn (batch norm after every conv); DFF, Accel and MPVSS "
                         "use FlowNetS without batch norm (flownets)")
    converted = rename(state, _FLOWNETPYTORCH_RULES)
    converted.conventions["flow_scale"] = float(div_flow) / 4.0
    return converted


def from_mmtracking(state: dict[str, torch.Tensor]) -> Converted:
    """mmtracking's FlowNetSimple (inside a DFF checkpoint under ``motion.``) -> :class:`FlowNetS`."""
    anchor = next(key for key in state if key.endswith("conv1.0.conv.weight"))
    prefix = anchor[: -len("conv1.0.conv.weight")]
    converted = rename(strip_prefix(state, prefix), _MMTRACKING_RULES)
    others = [key for key in state if not key.startswith(prefix)]
    if others:
        converted.dropped[f"modules other than the flow network (outside {prefix or 'the root'})"] = others
    converted.conventions["flow_scale"] = 5.0  # mmtracking's flow_scale_factor
    return converted


def encoder_only(converted: Converted) -> Converted:
    """A converted FlowNetS kept to its encoder: MPVSS's motion encoder is FlowNetS's encoder, and its
    decoders have other widths."""
    kept = Converted(strip_prefix(converted.state, "encoder."), dict(converted.dropped), list(converted.notes))
    decoder = [key for key in converted.state if not key.startswith("encoder.")]
    if decoder:
        kept.dropped["FlowNetS decoder (MPVSS's motion encoder is FlowNetS's encoder only)"] = decoder
    return kept
