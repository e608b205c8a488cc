"""Training: a generic loop over a method's own ``loss()``, checkpoints, and auto-training.

``train`` samples what the method's :class:`~vssbench.methods.base.TrainingRecipe` asks
for (single frames, or (key, current) pairs within the training interval), optimises
``method.trainable_parameters()`` with AdamW and a linear ("poly", power 1) learning-rate
decay as mmseg does, and is deterministic for a seed: every sample is drawn from a
generator seeded by (seed, sample index), so worker count and order do not matter.

``ensure_trained`` is what ``bench run`` uses on the synthetic dataset when no checkpoint
is given: it trains the segmentor once per preset (as ``perframe``), then the method's
own stage if it has parameters beyond the segmentor, caching both. A stage's cache name
carries a digest of the checkpoints it started from, so retraining a segmentor (say,
after its schedule changed) retrains every stage built on it instead of reusing stale
weights.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vssbench.benchmark import distributed
from vssbench.datasets.base import VideoDataset
from vssbench.datasets.transforms import image_to_tensor, resize_image, resize_label
from vssbench.methods.base import TrainingRecipe, VideoMethod, build_method
from vssbench.methods.perframe import segmentor_recipe
from vssbench.methods.segmentors import SEGMENTORS
from vssbench.methods.weights import LoadRecord, checkpoint_metadata, file_sha256, load_weights, save_checkpoint

log = logging.getLogger("vssbench")


class TrainingClips(torch.utils.data.Dataset):
    """Random training samples: ``frames`` (T, 3, H, W) and ``labels`` (T, H, W), key frame first."""

    def __init__(self, dataset: VideoDataset, recipe: TrainingRecipe, length: int, seed: int) -> None:
        self.dataset, self.recipe, self.length, self.seed = dataset, recipe, length, seed
        self.videos = [v for v in dataset.videos if v.num_labelled == len(v.frames)]
        if not self.videos:
            raise ValueError(f"{dataset.name}/{dataset.split} has no fully labelled video to train on")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        video = self.videos[rng.integers(len(self.videos))]
        frames = self.recipe.frames_per_sample
        if frames > 2:  # a clip of consecutive frames
            if len(video.frames) < frames:
                raise ValueError(f"video {video.name} has {len(video.frames)} frames; {frames}-frame clips need more")
            start = int(rng.integers(len(video.frames) - frames + 1))
            indices = list(range(start, start + frames))
        else:
            gap = int(rng.integers(self.recipe.max_interval)) if frames > 1 else 0
            start = int(rng.integers(len(video.frames) - gap))
            indices = [start, start + gap][:frames]
        flip = bool(rng.integers(2))
        images, labels = [], []
        for i in indices:
            record = video.frames[i]
            image = self.dataset.load_image(record.image)
            label = self.dataset.load_label(record.mask)
            size = self.dataset.target_size(*image.shape[:2])
            image, label = resize_image(image, size), resize_label(label, size)
            if flip:
                image, label = image[:, ::-1], label[:, ::-1]
            images.append(image_to_tensor(image))
            labels.append(torch.from_numpy(label.astype(np.int64)))
        return {"frames": torch.stack(images), "labels": torch.stack(labels)}


class _Objective(torch.nn.Module):
    """A method's loss as ``forward``, the call DistributedDataParallel wraps."""

    def __init__(self, method: VideoMethod) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.method.loss(batch)


@dataclass
class TrainingReport:
    iterations: int
    first_loss: float
    final_loss: float  # mean of the last 10% of iterations
    history: list[float]


def train(
    method: VideoMethod,
    dataset: VideoDataset,
    iterations: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 1,
    progress: bool = True,
) -> TrainingReport:
    """Optimise the method's trainable parameters with its own loss; returns the loss curve.

    Under torchrun, with DistributedDataParallel: each process takes its share of every
    batch (module docstring of :mod:`vssbench.benchmark.distributed`).
    """
    recipe = method.recipe if iterations is None else replace(method.recipe, iterations=iterations)
    rank, processes = distributed.world()
    if recipe.batch_size % processes:
        raise ValueError(f"training {method.spec}: batch size {recipe.batch_size} does not split across "
                         f"{processes} processes")
    torch.manual_seed(seed)
    method.to(device).train()
    parameters = [p for p in method.trainable_parameters()]
    if not parameters:
        raise ValueError(f"{method.spec} has no trainable parameters of its own; train its segmentor instead")
    objective: torch.nn.Module = _Objective(method)
    if processes > 1:
        objective = torch.nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
    optimizer = torch.optim.AdamW(parameters, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - i / recipe.iterations)
    clips = TrainingClips(dataset, recipe, recipe.iterations * recipe.batch_size, seed)
    # Rank r takes samples r, r + N, ...: together the processes' i-th batches are the i-th single-process batch.
    sampler = (torch.utils.data.distributed.DistributedSampler(clips, processes, rank, shuffle=False)
               if processes > 1 else None)
    loader = torch.utils.data.DataLoader(clips, batch_size=recipe.batch_size // processes, sampler=sampler,
                                         num_workers=num_workers, persistent_workers=num_workers > 0)
    history = []
    show = progress and rank == 0
    with tqdm(loader, desc=f"training {method.spec}", unit="it", disable=None if show else True) as bar:
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            terms = objective(batch)
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training {method.spec}: loss became {loss.item()} at iteration {len(history)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(loss.item())
            bar.set_postfix(loss=f"{history[-1]:.3f}", **{k: f"{v.item():.3f}" for k, v in terms.items()})
    if processes > 1:  # batch-norm statistics moved on each rank's own share of the last batch: keep rank 0's
        distributed.broadcast_buffers(method)
    method.eval()
    tail = history[-max(1, len(history) // 10):]
    return TrainingReport(len(history), history[0], sum(tail) / len(tail), history)


def ensure_trained(
    method: VideoMethod,
    train_set: VideoDataset,
    cache_dir: Path,
    iterations: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    stage_iterations: int | None = None,
) -> Path:
    """Load cached weights for ``method`` trained on ``train_set``, training whatever is missing.

    ``iterations`` overrides every schedule (segmentors and stages); ``stage_iterations``
    overrides only the video methods' own stages, so that a stage's schedule can be varied
    on top of the same segmentor. ``method`` is expected fresh from ``build_method`` under
    ``torch.manual_seed(seed)``, as the runner and ``bench train`` build it: a stage trained
    here then starts from the same weights as ``bench train`` would. Returns the checkpoint
    that now describes the weights.
    """
    cache_dir = Path(cache_dir)
    components = method.component_methods()
    if components:  # loaded in place: they are submodules of ``method``
        starts = [ensure_trained(component, train_set, cache_dir, iterations, seed, device, stage_iterations)
                  for component in components.values()]
    else:
        starts = [_ensure_segmentor(method, train_set, cache_dir, iterations, seed, device)]
    if not method.has_own_training_stage:
        return _segmentor_checkpoint(method, cache_dir, iterations, seed)
    stage_iterations = stage_iterations or iterations or method.recipe.iterations
    started_from = hashlib.sha256("".join(file_sha256(path) for path in starts).encode()).hexdigest()[:8]
    method_path = cache_dir / (f"{method.name}-{method.preset}-{method.checkpoint_variant}-s{seed}"
                               f"-it{stage_iterations}-from{started_from}.pt")
    if method_path.is_file():
        load_weights(method, method_path, purpose="train")
        return method_path
    log.info("no cached %s (%s); training its stage", method.spec, method.variant)
    report = train(method, train_set, stage_iterations, seed, device)
    save_checkpoint(method, method_path, training_metadata(report, train_set, seed, starts))
    log.info("trained %s: loss %.3f -> %.3f", method.spec, report.first_loss, report.final_loss)
    return method_path


def _segmentor_checkpoint(method: VideoMethod, cache_dir: Path, iterations: int | None, seed: int) -> Path:
    # Cache names carry the seed and iteration count, so a changed recipe never reuses stale weights, and
    # the segmentor's revision when it is past the first, so a changed computation never does either.
    segmentor_iterations = iterations or segmentor_recipe(method.segmentor_preset).iterations
    revision = SEGMENTORS[method.segmentor_preset][0].revision
    suffix = f"-r{revision}" if revision > 1 else ""
    return cache_dir / f"perframe-{method.segmentor_preset}{suffix}-s{seed}-it{segmentor_iterations}.pt"


def _ensure_segmentor(method: VideoMethod, train_set: VideoDataset, cache_dir: Path, iterations: int | None,
                      seed: int, device: torch.device | str) -> Path:
    """Load the method's segmentor from the cache, training the per-frame segmentor first if needed."""
    segmentor_path = _segmentor_checkpoint(method, cache_dir, iterations, seed)
    if not segmentor_path.is_file():
        log.info("no cached %s segmentor; training it on %s/%s", method.segmentor_preset, train_set.name, train_set.split)
        torch.manual_seed(seed)  # the same initialisation as `bench train --method perframe:...` gives
        segmentor_method = build_method(f"perframe:{method.segmentor_preset}", method.num_classes)
        report = train(segmentor_method, train_set, iterations, seed, device)
        save_checkpoint(segmentor_method, segmentor_path, training_metadata(report, train_set, seed))
        log.info("trained %s: loss %.3f -> %.3f", segmentor_method.spec, report.first_loss, report.final_loss)
    load_weights(method, segmentor_path, purpose="train")
    return segmentor_path


def training_metadata(report: TrainingReport, dataset: VideoDataset, seed: int,
                      started_from: list[Path] | tuple[Path, ...] = (), records: list[LoadRecord] = ()) -> dict:
    """What a checkpoint records about how it was trained: the data, the schedule, the seed, the
    losses, and the same record of each checkpoint it started from (a stage's segmentor), so that
    a result row can show, and ``bench check`` compare, the whole training chain behind its weights.
    ``records`` are the loads of ``started_from``; for weights converted from another format their format,
    digest and conversion are kept with them (a vssbench checkpoint carries its own record)."""
    provenance = {record.file: record.as_row() for record in records if record.format != "vssbench"}
    return {
        "dataset": dataset.name,
        "dataset_root": str(dataset.root),
        "split": dataset.split,
        "iterations": report.iterations,
        "seed": seed,
        "first_loss": report.first_loss,
        "final_loss": report.final_loss if math.isfinite(report.final_loss) else None,
        "started_from": [{"file": Path(path).name, **checkpoint_metadata(path),
                          **({"weights": provenance[str(path)]} if str(path) in provenance else {})}
                         for path in started_from],
    }
