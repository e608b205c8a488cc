"""What CFFM and MRCFA share: their test-time clip of reference frames, the per-frame cache behind it,
and the conversion of the SegFormer branch of their official checkpoints.

Both official repositories evaluate with the same dataset code (``CustomDataset_video2.prepare_test_img2``
with ``dilation=[-9, -6, -3]``): frame i of a video uses the clip (i-9, i-6, i-3, i); frames 3-8 use
hard-coded clips; frames 0-2 have no reference frame and get the per-frame prediction.

How a method meets the frames is its variant (:class:`Protocol`, data):

* ``default``, vssbench's uniform protocol: the frame as the dataset gives it (MRCFA, which needs it,
  resizes the normalised frame up to a multiple of 32), and what a method computes from one frame alone
  (batch norm in evaluation mode) computed once per frame and kept for nine frames: the cost report
  counts one SegFormer pass per frame.
* ``official``, the official test: the frame's 8-bit image resized up to a multiple of 32 as mmcv's
  ``AlignedResize`` does (bit for bit, :func:`~vssbench.datasets.transforms.resize_like_mmcv`), every
  frame of each clip through SegFormer again in one batch, as ``EncoderDecoder_clips`` runs it (the cost
  report then counts four SegFormer passes per frame), and the logits returned at the aligned size, which
  the runner resizes to the label: the official two resizes (to the image, then to the original shape).
  It uses the default variant's trained weights.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vssbench.datasets.transforms import from_pixels, resize_like_mmcv, to_pixels
from vssbench.methods.base import VideoMethod
from vssbench.methods.keymap import Converted
from vssbench.methods.segmentors import SegFormer, build_segmentor
from vssbench.methods.segmentors.segformer import TEMPORAL_HEAD, from_nvlabs

# Clips at test time (the official dataset code): frame index -> the frames of its clip, target last.
EARLY_CLIPS = {3: (0, 1, 2, 3), 4: (0, 2, 3, 4), 5: (0, 2, 4, 5), 6: (0, 2, 4, 6), 7: (0, 3, 5, 7), 8: (0, 3, 6, 8)}
REFERENCE_OFFSETS = (-9, -6, -3)
CACHED_FRAMES = -min(REFERENCE_OFFSETS)  # frames back a clip reaches, beside the current one


def clip_for(index: int) -> tuple[int, ...]:
    """The frames the official protocol gives frame ``index``: (index,) alone for frames 0-2."""
    if index in EARLY_CLIPS:
        return EARLY_CLIPS[index]
    return tuple(index + offset for offset in REFERENCE_OFFSETS if index + offset >= 0) + (index,)


@dataclass(frozen=True)
class Protocol:
    """How a clip method meets the frames at test time (one variant)."""

    size_divisor: int  # frames resized up to a multiple of it (1: as given), the logits returned at that size
    pixels: bool  # resize the 8-bit image as mmcv does (False: the normalised frame, bilinear)
    recompute: bool  # every frame of each clip through the network again, as the official code runs it


def aligned_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``divisor`` (``AlignedResize``'s ``size_divisor``)."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def resize_to_multiple(frames: torch.Tensor, divisor: int) -> torch.Tensor:
    """Normalised (N, 3, H, W) frames resized (bilinear) up to multiples of ``divisor``; unchanged if they are."""
    size = aligned_size(int(frames.shape[2]), int(frames.shape[3]), divisor)
    if size == tuple(frames.shape[2:]):
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False)


def split_clip(flat: dict, batch: int, frames: int) -> list[dict]:
    """Per-frame records of ``batch x frames`` inputs (batch-major, as the official code flattens a
    batch of clips) -> one record per frame of the clip, each with the batch's tensors."""
    def part(value: torch.Tensor, i: int) -> torch.Tensor:
        return value.view(batch, frames, *value.shape[1:])[:, i]

    return [{k: [part(x, i) for x in v] if isinstance(v, list) else part(v, i) for k, v in flat.items()}
            for i in range(frames)]


class ClipMethod(VideoMethod):
    """A SegFormer on every frame and a head that refines the target frame over its clip.

    A subclass says what one frame gives (:meth:`per_frame`, a record holding at least its per-frame
    ``logits``) and how a clip of such records becomes the target's logits (:meth:`predict_clip`).
    """

    uses_key_frames = False  # every frame is refined; its clip, not a key-frame schedule, is the context
    protocols: dict[str, Protocol]  # variant name -> its protocol, the default first

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str) -> None:
        super().__init__(preset, variant, num_classes)
        self._segmentor_preset = segmentor
        self.segmentor: SegFormer = build_segmentor(segmentor, num_classes)  # type: ignore[assignment]
        self.protocol = self.protocols[variant]
        self._frames: dict[int, dict | torch.Tensor] = {}  # frame index -> what per_frame gave (or its input)
        self._index = 0

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "protocols" in cls.__dict__:
            cls.variants = tuple(cls.protocols)

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

    @property
    def checkpoint_variant(self) -> str:
        """Every protocol runs the same network: the default variant's weights."""
        return type(self).variants[0]

    def reset(self) -> None:
        self._frames, self._index = {}, 0

    def set_conventions(self, conventions: dict) -> None:
        """A converted checkpoint's numerical conventions (NVlabs's layer-norm epsilons) are its SegFormer's."""
        self.segmentor.set_conventions(conventions)

    @abc.abstractmethod
    def per_frame(self, frames: torch.Tensor) -> dict:
        """(N, 3, H, W) -> what depends on these frames alone, ``logits`` (the per-frame prediction) included."""

    @abc.abstractmethod
    def predict_clip(self, clip: list[dict]) -> torch.Tensor:
        """The target's logits from the per-frame records of its clip (references first, target last)."""

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised frames as the protocol feeds them to the network: resized up to its size divisor."""
        size = aligned_size(int(frames.shape[2]), int(frames.shape[3]), self.protocol.size_divisor)
        if self.protocol.pixels and size != tuple(frames.shape[2:]):
            return from_pixels(resize_like_mmcv(to_pixels(frames), size), frames.dtype)
        return resize_to_multiple(frames, self.protocol.size_divisor)

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        """The target's logits; at the prepared frame's size where the protocol resized the frame."""
        return self._refine_next(self.prepare(frame), tuple(frame.shape[2:]))

    def _refine_next(self, prepared: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The next frame's logits from its prepared input (``size``: the frame's own size)."""
        index = self._index
        self._index += 1
        clip = clip_for(index)
        if self.protocol.recompute:  # keep the inputs; run the clip's frames in one batch
            self._frames[index] = prepared
            stacked = torch.stack([self._frames[i] for i in clip], 1)  # (B, T, 3, H, W)
            records = split_clip(self.per_frame(stacked.flatten(0, 1)), stacked.shape[0], len(clip))
        else:
            self._frames[index] = self.per_frame(prepared)
            records = [self._frames[i] for i in clip]
        for old in [i for i in self._frames if i < index - CACHED_FRAMES]:
            del self._frames[old]
        # frames 0-2: no reference frame, the per-frame branch
        logits = records[-1]["logits"] if len(clip) == 1 else self.predict_clip(records)
        if tuple(prepared.shape[2:]) != size:
            logits = F.interpolate(logits, size=prepared.shape[2:], mode="bilinear", align_corners=False)
        return logits

    def cost_paths(self, frame: torch.Tensor) -> dict:
        """One steady-state frame (a full clip from the tenth frame on): its per-frame work and the head
        over its clip; the earlier frames' records come from the cache, or, where the protocol recomputes,
        the clip's four frames run through the network again. The protocol's resize of the input image is
        data preparation, outside the count, as in the official FLOP counts."""
        self.reset()
        prepared, size = self.prepare(frame), tuple(frame.shape[2:])
        for _ in range(CACHED_FRAMES):
            self._refine_next(prepared, size)

        def steady() -> torch.Tensor:
            self._index = CACHED_FRAMES
            return self._refine_next(prepared, size)

        return {"key": steady, "nonkey": steady}


def segformer_branch(state: dict[str, torch.Tensor], temporal_prefixes: tuple[str, ...]) -> Converted:
    """The SegFormer branch of an official CFFM or MRCFA checkpoint, under the method's ``segmentor.``:
    NVlabs's key map on every tensor outside ``temporal_prefixes`` (the temporal head, which the caller
    converts itself). A head tensor that is neither SegFormer's nor under those prefixes keeps its name,
    so that the loader reports it as a tensor the method lacks instead of dropping it unseen."""
    converted = from_nvlabs({k: v for k, v in state.items() if not k.startswith(temporal_prefixes)})
    converted.state = {f"segmentor.{k}": v for k, v in converted.state.items()}
    converted.state.update({key: state[key] for key in converted.dropped.pop(TEMPORAL_HEAD, [])})
    converted.notes = [note for note in converted.notes if "temporal modules" not in note]
    return converted
