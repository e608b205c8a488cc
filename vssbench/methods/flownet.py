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

Input preparation follows mmtracking and MPVSS: frames are brought back to [0, 1] and
centred by (0.411, 0.432, 0.450), the pair is concatenated as (current, key) and resized
by ``image_scale`` (0.5). The official MPVSS code first pads the pair to a multiple of 32;
vssbench does not (the flow grid then stays aligned with the frame), which changes the
flow module's FLOPs by the padded area (480x853 -> 480x864: +1.3%); the fidelity report
shows both. Flow is returned on its own grid (1/4 of the resized input) in pixels of that
grid, times ``flow_scale``; :func:`vssbench.methods.warp.flow_warp` rescales it to
whatever it warps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD

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

    def forward(self, current: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """(B, 2, H/8, W/8) flow in pixels of its own grid (x, y) for ``image_scale`` 0.5."""
        return self.flow_and_features(current, key)[0]

    def flow_and_features(self, current: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow and the decoder's finest features it is predicted from (DFF's scale map reads them)."""
        features = self.decoder(self.encoder(prepare_pair(current, key, self.image_scale)))
        return self.predict_flow(features) * self.flow_scale, features
