"""A check shared by the propagation methods' tests: does frame 2 depend on frame 1?"""

import torch

from vssbench.methods.base import VideoMethod


def third_frame_after_and_without_the_second(method: VideoMethod) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of frame 2 of a random 3-frame clip (key frame 0) when frame 1 was stepped
    through as a non-key frame, and when the method went from the key frame straight to
    frame 2. Equal for methods that always propagate from the key frame; different for
    methods that propagate frame to frame."""
    frames = torch.randn(3, 1, 3, 64, 96)
    with torch.no_grad():
        method.reset()
        method.step(frames[0], True)
        method.step(frames[1], False)
        after_second = method.step(frames[2], False)
        method.reset()
        method.step(frames[0], True)
        without_second = method.step(frames[2], False)
    return after_second, without_second
