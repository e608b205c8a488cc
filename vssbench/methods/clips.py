"""What CFFM and MRCFA share: their test-time clip of reference frames, the per-frame cache behind it,
and the conversion of the SegFormer branch of their official checkpoints.

Both official repositories evaluate with the same dataset code (``CustomDataset_video2.prepare_test_img2``
with ``dilation=[-9, -6, -3]``): frame i of a video uses the clip (i-9, i-6, i-3, i); frames 3-8 use
hard-coded clips; frames 0-2 have no reference frame and get the per-frame prediction. What a method
computes from one frame alone (batch norm in evaluation mode) is computed once per frame and kept for
nine frames, so outputs equal the official clip-by-clip computation while the cost report counts one
SegFormer pass per frame.
"""

from __future__ import annotations

import abc

import torch

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


class ClipMethod(VideoMethod):
    """A SegFormer on every frame and a head that refines the target frame over its clip.

    A subclass says what one frame gives (:meth:`per_frame`, a record holding at least its per-frame
    ``logits``) and how a clip of such records becomes the target's logits (:meth:`predict_clip`).
    """

    uses_key_frames = False  # every frame is refined; its clip, not a key-frame schedule, is the context

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str) -> None:
        super().__init__(preset, variant, num_classes)
        self._segmentor_preset = segmentor
        self.segmentor: SegFormer = build_segmentor(segmentor, num_classes)  # type: ignore[assignment]
        self._frames: dict[int, dict] = {}  # frame index -> what per_frame gave for it
        self._index = 0

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

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

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        index = self._index
        self._index += 1
        self._frames[index] = self.per_frame(frame)
        for old in [i for i in self._frames if i < index - CACHED_FRAMES]:
            del self._frames[old]
        clip = clip_for(index)
        if len(clip) == 1:  # frames 0-2: no reference frame, the per-frame branch
            return self._frames[index]["logits"]
        return self.predict_clip([self._frames[i] for i in clip])

    def cost_paths(self, frame: torch.Tensor) -> dict:
        """One steady-state frame (a full clip from the tenth frame on): its per-frame work and the head
        over its clip; the earlier frames' records come from the cache."""
        self.reset()
        for _ in range(CACHED_FRAMES):
            self.step(frame, True)

        def steady() -> torch.Tensor:
            self._index = CACHED_FRAMES
            return self.step(frame, True)

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
