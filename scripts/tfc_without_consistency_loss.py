"""TFC trained without Eq. 12's focal consistency term: what that term costs the segmentor.

An ablation outside the paper. It registers ``tfc-no-consistency``, TFC whose training loss
keeps the two cross-entropies and drops ``focal_consistency`` (nothing else differs), for
this process only, and hands the remaining arguments to ``bench run``. The run trains the
stage from the cached per-frame SegFormer with TFC's recipe and seed, exactly as ``bench
run`` trains ``tfc``, and caches it under its own name. Compare its rows with ``tfc``'s:

    python scripts/tfc_without_consistency_loss.py --variants linear-interp --intervals 1,4

Variants without Eq. 12 (``fixed-interp``, ``feature-reuse``, ``flow-warp``) train the
same with or without this script.
"""

from __future__ import annotations

import sys

import torch

from vssbench.cli import main
from vssbench.methods.base import register_method
from vssbench.methods.tfc import TFC


@register_method("tfc-no-consistency")
class TFCWithoutConsistencyLoss(TFC):
    """TFC whose training loss is the key and non-key cross-entropies only."""

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        terms = super().loss(batch)
        terms.pop("focal_consistency", None)
        return terms

    def dropped_loss_terms(self) -> dict[str, str]:
        return {"focal_consistency": "tfc-no-consistency drops Eq. 12's consistency term"}


if __name__ == "__main__":
    sys.exit(main(["run", "--methods", "tfc-no-consistency:tiny", *sys.argv[1:]]))
