"""What a weight conversion produces, and the key-renaming rules the model files write theirs with.

Each model file carries the key maps of the formats its weights come in (as timm's
``checkpoint_filter_fn``): a function from the source file's tensors to the tensors of
vssbench's module under its own portable names (Hugging Face submodules under their
on-disk, hub names; see :mod:`vssbench.methods.weights`). Those functions return a
:class:`Converted`: the tensors, the source keys dropped on purpose and why, notes, and
the source's numerical conventions that the loaded module must adopt to compute what the
source computes (a layer-norm epsilon, a flow scale).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


@dataclass
class Converted:
    """Tensors under the target module's portable names, with what the conversion did."""

    state: dict[str, torch.Tensor]
    dropped: dict[str, list[str]] = field(default_factory=dict)  # why -> source keys left out on purpose
    notes: list[str] = field(default_factory=list)
    conventions: dict[str, object] = field(default_factory=dict)
    # Patterns of target tensors the source has no counterpart for by design (new output norms of an
    # ImageNet backbone): left as initialised and reported, where any other missing tensor is an error.
    new: list[str] = field(default_factory=list)

    def drop(self, reason: str, key: str) -> None:
        self.dropped.setdefault(reason, []).append(key)


Rules = Iterable[tuple[str, str]]


def rename(state: dict[str, torch.Tensor], rules: Rules, drop: dict[str, str] | None = None) -> Converted:
    """Apply regular-expression rules to every key of ``state``.

    ``drop`` maps a pattern to the reason its keys are left out (an auxiliary training head,
    a classification layer); every other key goes through each rule ``(pattern, replacement)``
    in order (``re.sub``). A key no rule touches keeps its name, and the loader reports it as
    unexpected if the target has no such tensor, so a source layout the rules do not know is an
    error, never a silent skip.
    """
    rules, drop = list(rules), drop or {}
    converted = Converted({})
    for key, tensor in state.items():
        reason = next((why for pattern, why in drop.items() if re.search(pattern, key)), None)
        if reason is not None:
            converted.drop(reason, key)
            continue
        name = key
        for pattern, replacement in rules:
            name = re.sub(pattern, replacement, name)
        converted.state[name] = tensor
    return converted


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose keys start with ``prefix``, without it."""
    return {key[len(prefix):]: tensor for key, tensor in state.items() if key.startswith(prefix)}
