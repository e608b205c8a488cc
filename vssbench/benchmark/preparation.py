"""Where each method's weights come from in a ``bench run``: a checkpoint named for it, the weights shipped
with vssbench, training on the synthetic set, or (asked for) the random initialisation, which its rows
then say. The runner calls the ``prepare`` built here on every freshly built method."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vssbench.benchmark import distributed
from vssbench.benchmark.runner import PreparedWeights
from vssbench.datasets.base import VideoDataset
from vssbench.methods.base import VideoMethod, parse_spec
from vssbench.methods.weights import CheckpointError, load_weights, random_parameters

log = logging.getLogger("vssbench")


@dataclass
class WeightSources:
    """What a run may take weights from (``bench run``'s --checkpoint, --shipped-weights, --random-weights,
    and on the synthetic set the auto-training of what has no checkpoint)."""

    checkpoints: dict[str, Path] = field(default_factory=dict)  # method spec -> file or folder; "*": every one
    random_weights: bool = False
    shipped_weights: bool = False
    train_set: VideoDataset | None = None  # auto-training: train what has no checkpoint on this split
    cache: Path | None = None  # where auto-trained checkpoints are kept
    train_iters: int | None = None  # overrides of the synthetic recipes' iterations
    stage_iters: int | None = None
    device: str = "cpu"


def missing_weights(specs: list[str], sources: WeightSources) -> list[str]:
    """The specs that would have no weights: off the synthetic set nothing trains itself."""
    if sources.train_set is not None or sources.random_weights or sources.shipped_weights \
            or "*" in sources.checkpoints:
        return []
    return [spec for spec in specs if ":".join(parse_spec(spec)) not in sources.checkpoints]


def weights_preparer(sources: WeightSources, seed: int) -> Callable[[VideoMethod], PreparedWeights]:
    """The runner's ``prepare``: load the method's checkpoint, the shipped weights, or train it (with
    ``seed``) on ``sources.train_set``; else keep its random initialisation, and say which."""
    from vssbench.benchmark.shipped import shipped_for
    from vssbench.benchmark.training import ensure_trained, trained_as

    def prepare(method: VideoMethod) -> PreparedWeights:
        path = sources.checkpoints.get(method.spec) or sources.checkpoints.get("*")
        if path is not None:
            record = load_weights(method, path, purpose="evaluate")
            random = random_parameters(method, [record])
            if random and not sources.random_weights:
                parts = ", ".join(f"{part} ({count / 1e6:.2f}M parameters)" for part, count in random.items())
                raise CheckpointError(f"{path} gives {method.spec} ({method.variant}) its {record.component} only; "
                                      f"{parts} would stay random: train them (bench train --method {method.spec} "
                                      f"--init {record.component}={path}) or pass --random-weights")
            return PreparedWeights(path, [record.as_row()], random, declared=record.declared)
        if sources.shipped_weights:
            shipped = shipped_for(trained_as(method), seed)
            record = load_weights(method, shipped.file, purpose="evaluate")
            return PreparedWeights(shipped.file, [record.as_row()], random_parameters(method, [record]),
                                   declared=record.declared, shipped=shipped.row_block())
        if sources.train_set is not None:
            with distributed.main_process_first():  # rank 0 trains and caches; the others then load
                trained = ensure_trained(method, sources.train_set, sources.cache, sources.train_iters, seed,
                                         sources.device, sources.stage_iters)
            return PreparedWeights(trained)
        log.warning("%s: random weights (--random-weights); its rows say weights: random", method.spec)
        return PreparedWeights(random=random_parameters(method, []))

    return prepare
