"""Training: one loop over a method's own ``loss()``, run as a recipe says (:mod:`vssbench.recipes`).

``train`` samples what the recipe asks for (single frames, (key, current) pairs, clips), transforms
each sample with the recipe's augmentation pipeline (:mod:`vssbench.datasets.augment`), weights the
terms of the method's ``loss()`` by the recipe's ``loss_weights``, and optimises
``method.trainable_parameters()`` (after the recipe's ``trainable`` rules set ``requires_grad``) with
its optimizer, parameter groups (:func:`parameter_groups`), warm-up and schedule, gradient clipping
and, on CUDA, mixed precision (the recipe's ``amp`` unless overridden).

What is learned does not depend on how the run is spread: the global batch is the recipe's whatever
the number of processes; a forward pass takes ``micro_batch`` samples (the paper's per-device batch),
and a step averages the gradients of ``batch / micro_batch`` passes, split across processes and, where
fewer processes than that, accumulated (``no_sync`` until the last). Sample ``i`` of the run comes
from a generator seeded by (seed, i), and micro-batch ``k`` of step ``s`` holds samples
``s * batch + k * micro_batch ...``, whoever computes it. So a resumed run, or one on another number of
processes, ends where an uninterrupted single-process run does: exactly when resumed (the state file
holds the weights, the optimizer, the schedule and every random state); to float tolerance across
process counts, whose sums of gradients run in another order (with Adam, parameters whose gradient is
zero in exact arithmetic, such as biases before a batch norm, take steps of the learning rate on that
float noise, which differ between any two such runs).

``ensure_trained`` is what ``bench run`` uses on the synthetic dataset when no checkpoint is given: it
trains the segmentor once per preset (as ``perframe``), then the method's own stage if it has
parameters beyond the segmentor, caching both. A stage's cache name carries a digest of the
checkpoints it started from, so retraining a segmentor (say, after its schedule changed) retrains
every stage built on it instead of reusing stale weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vssbench.benchmark import distributed
from vssbench.datasets.augment import augment
from vssbench.datasets.base import VideoDataset
from vssbench.files import atomic_path
from vssbench.methods.base import NORM_TYPES, VideoMethod, build_method
from vssbench.methods.segmentors import SEGMENTORS
from vssbench.methods.weights import (
    LoadRecord,
    checkpoint_metadata,
    file_sha256,
    load_weights,
    save_checkpoint,
    weights_digest,
)
from vssbench.progress import Progress
from vssbench.recipes import Recipe, recipe_for

log = logging.getLogger("vssbench")
STATE_FORMAT = "vssbench-training-state/1"


class TrainingError(ValueError):
    """A training run that cannot start as asked: a batch that does not split, a state file of another run."""


class TrainingClips(torch.utils.data.Dataset):
    """Random training samples: ``frames`` (T, 3, H, W) and ``labels`` (T, H, W), key frame first.

    Sample ``index`` is drawn from a generator seeded by (seed, index): the video, then where in it
    (a clip's start; a pair's gap from the recipe's range, then its start), then the augmentation.
    Videos labelled on every frame are sampled; a dataset labelled on some frames only (Cityscapes)
    gives samples that end on a labelled frame, the other frames' labels all ignored (255).
    """

    def __init__(self, dataset: VideoDataset, recipe: Recipe, length: int, seed: int) -> None:
        self.dataset, self.recipe, self.length, self.seed = dataset, recipe, length, seed
        # A video shorter than a sample needs is skipped, as CFFM's and MRCFA's loaders skip those shorter
        # than their references reach (prepare_train_img2 returns None for them).
        offsets = recipe.sampling.get("offsets")
        needed = 1 - min(offsets) if offsets else recipe.frames_per_sample
        long_enough = [v for v in dataset.videos if len(v.frames) >= needed]
        self.dense = [v for v in long_enough if v.num_labelled == len(v.frames)]
        self.videos = self.dense or [v for v in long_enough if v.num_labelled]
        if not self.videos:
            raise TrainingError(f"{dataset.name}/{dataset.split} ({dataset.root}) has no labelled video of at least "
                                f"{needed} frames, which the {recipe.name} recipe's samples need")
        self.steps = [dict(step) for step in recipe.augmentation]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        video = self.videos[rng.integers(len(self.videos))]
        indices = self._frame_indices(video, rng)
        images, labels = [], []
        for i in indices:
            record = video.frames[i]
            image = self.dataset.load_image(record.image)
            label = (self.dataset.load_label(record.mask) if record.mask is not None
                     else np.full(image.shape[:2], 255, np.uint8))
            images.append(image)
            labels.append(label)
        size = self.dataset.target_size(*images[0].shape[:2])
        steps = [{**step, "size": list(size)} if step["type"] == "resize" and "size" not in step else step
                 for step in self.steps]
        frames, targets = augment(images, labels, steps, rng)
        return {"frames": frames, "labels": targets}

    def _frame_indices(self, video, rng: np.random.Generator) -> list[int]:
        frames, count = self.recipe.frames_per_sample, len(video.frames)
        offsets = self.recipe.sampling.get("offsets")
        if offsets:  # a target and references at fixed offsets before it (CFFM's dilation), the target last
            first = -min(offsets)
            target = int(rng.integers(first, count)) if self.dense else max(first, _labelled(video))
            return [target + offset for offset in offsets] + [target]
        if frames > 2:  # a clip of consecutive frames
            if self.dense:
                start = int(rng.integers(count - frames + 1))
            else:  # end on the labelled frame
                start = max(0, _labelled(video) - frames + 1)
            return list(range(start, start + frames))
        if frames == 1:
            return [int(rng.integers(count))] if self.dense else [_labelled(video)]
        low, high = int(self.recipe.sampling.get("min_gap", 0)), int(self.recipe.sampling["max_gap"])
        gap = int(rng.integers(low, high + 1))
        # either_side: the reference is as likely after the labelled frame as before it (DCFM's
        # ref_id = image_id +- R); the pair stays (reference, labelled).
        after = bool(self.recipe.sampling.get("either_side")) and bool(rng.integers(2))
        if self.dense:
            start = int(rng.integers(count - gap))
            return [start + gap, start] if after else [start, start + gap]
        current = _labelled(video)
        return [min(count - 1, current + gap), current] if after else [max(0, current - gap), current]


def _labelled(video) -> int:
    return next(i for i, frame in enumerate(video.frames) if frame.mask is not None)


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
    # What ran, for the checkpoint's record: the mixed precision ("fp16", "bf16" or None), the samples per
    # forward pass, the weight of each loss term and the weighted terms this variant dropped (with why).
    amp: str | None = None
    micro_batch: int | None = None
    loss_weights: dict[str, float] | None = None
    dropped_loss_terms: dict[str, str] | None = None
    trained_parameters: int | None = None


@dataclass
class TrainingOptions:
    """How a run executes its recipe. Only ``amp`` changes what is computed (mixed precision)."""

    device: str = "cpu"
    num_workers: int = 1
    progress: bool = True
    # "bf16" or "fp16" autocast on CUDA, "off"; None: the recipe's (fp16 on CUDA where its amp is true)
    amp: str | None = None
    state_path: Path | None = None  # the resumable state, written every save_every iterations
    save_every: int = 0
    log_path: Path | None = None  # a JSONL record every log_every iterations
    log_every: int = 10
    validation: VideoDataset | None = None  # scored every validate_every iterations
    validate_every: int = 0
    validate_interval: int = 5  # the key-frame interval validation scores at (1 for methods without key frames)


def sample_order(step: int, rank: int, processes: int, micro_batch: int, batch: int, pass_index: int) -> list[int]:
    """The sample indices of one forward pass: micro-batch ``pass_index * processes + rank`` of ``step``."""
    first = step * batch + (pass_index * processes + rank) * micro_batch
    return list(range(first, first + micro_batch))


class _StepSampler(torch.utils.data.Sampler):
    """This process's micro-batches of the steps from ``start`` on, in the order it runs them."""

    def __init__(self, start: int, steps: int, rank: int, processes: int, micro_batch: int, batch: int) -> None:
        self.args = (start, steps, rank, processes, micro_batch, batch)

    def __iter__(self):
        start, steps, rank, processes, micro, batch = self.args
        passes = batch // (micro * processes)
        for step in range(start, steps):
            for index in range(passes):
                yield sample_order(step, rank, processes, micro, batch, index)

    def __len__(self) -> int:
        start, steps, _, processes, micro, batch = self.args
        return (steps - start) * (batch // (micro * processes))


def apply_trainable(method: VideoMethod, rules: tuple[dict, ...] | None) -> None:
    """A recipe's ``trainable`` rules, first match wins: which parameters learn (None keeps the method's)."""
    if not rules:
        return
    for module_name, module, name, parameter in _named_parameters_with_modules(method):
        rule = _first_rule(rules, name, module)
        if rule is not None:
            parameter.requires_grad = bool(rule["train"])


def _named_parameters_with_modules(method: nn.Module):
    seen = set()
    for module_name, module in method.named_modules():
        for short, parameter in module.named_parameters(recurse=False):
            if id(parameter) not in seen:
                seen.add(id(parameter))
                yield module_name, module, f"{module_name}.{short}" if module_name else short, parameter


def _first_rule(rules: tuple[dict, ...], name: str, module: nn.Module) -> dict | None:
    for rule in rules:
        kind = rule.get("module_type")
        if kind == "norm" and isinstance(module, NORM_TYPES):
            return rule
        if kind == "embedding" and isinstance(module, nn.Embedding):
            return rule
        if kind is None and re.search(rule.get("match", ""), name):
            return rule
    return None


def parameter_groups(method: VideoMethod, recipe: Recipe) -> list[tuple[str, nn.Parameter, float, float]]:
    """(name, parameter, lr, weight decay) of every parameter of ``method.trainable_parameters()``, by
    the rule of the framework the recipe's ``param_groups`` names:

    * ``mmcv`` (mmseg's DefaultOptimizerConstructor with ``paramwise_cfg.custom_keys``): the keys are
      tried longest first (ties alphabetically), and the first one contained in the parameter's full
      name gives both its ``lr_mult`` and its ``decay_mult`` (each 1 if absent); no key, the base values.
    * ``detectron2`` (Mask2Former's ``build_optimizer``): the rate times ``backbone_multiplier`` for the
      parameters of modules matching ``backbone``; decay 0 for parameter names containing one of
      ``no_decay_names``, ``weight_decay_norm`` for the parameters of norm layers, ``weight_decay_embed``
      for those of ``nn.Embedding``; each rule applies on its own (a backbone norm gets the backbone's
      rate and the norm's decay).
    * ``single``: one group at the base values.
    """
    rule = dict(recipe.param_groups)
    style = rule.get("style", "single")
    if style not in ("mmcv", "detectron2", "single"):
        raise ValueError(f"recipe {recipe.method}/{recipe.dataset}: param_groups style {style!r}; expected "
                         "mmcv, detectron2 or single")
    custom = rule.get("custom_keys", {})
    keys = sorted(sorted(custom), key=len, reverse=True)
    trainable = {id(p) for p in method.trainable_parameters()}
    out = []
    for module_name, module, name, parameter in _named_parameters_with_modules(method):
        if id(parameter) not in trainable:
            continue
        lr, decay = recipe.learning_rate, recipe.weight_decay
        if style == "mmcv":
            key = next((k for k in keys if k in name), None)
            if key is not None:
                lr *= float(custom[key].get("lr_mult", 1.0))
                decay *= float(custom[key].get("decay_mult", 1.0))
        elif style == "detectron2":
            if re.search(rule["backbone"], module_name + "."):
                lr *= float(rule["backbone_multiplier"])
            if any(part in name for part in rule.get("no_decay_names", ())):
                decay = 0.0
            if isinstance(module, NORM_TYPES):
                decay = float(rule["weight_decay_norm"])
            if isinstance(module, nn.Embedding):
                decay = float(rule["weight_decay_embed"])
        out.append((name, parameter, lr, decay))
    return out


def build_optimizer(method: VideoMethod, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``method.trainable_parameters()``, one group per distinct (lr, decay)
    that :func:`parameter_groups` gives."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for _, parameter, lr, decay in parameter_groups(method, recipe):
        groups.setdefault((lr, decay), []).append(parameter)
    if not groups:
        raise ValueError(f"{method.spec} has no trainable parameters of its own; train its segmentor instead")
    param_groups = [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=recipe.learning_rate, betas=recipe.betas or (0.9, 0.999))
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=recipe.learning_rate, momentum=recipe.momentum or 0.0)
    raise ValueError(f"recipe {recipe.method}/{recipe.dataset}: unknown optimizer {recipe.optimizer!r}")


def loss_weights(method: VideoMethod, recipe: Recipe, terms: tuple[str, ...] | None = None) -> dict[str, float]:
    """The weight of each term ``method.loss()`` returns (``terms``, default ``method.loss_terms()``) from
    the recipe's ``loss_weights``. A term without a weight, or a weight for a term that the method neither
    computes nor declares dropped (``dropped_loss_terms``), is a :class:`TrainingError` naming both."""
    terms = terms if terms is not None else method.loss_terms()
    weights = {name: float(value) for name, value in recipe.loss_weights.items()}
    if terms is None:
        return weights
    dropped = method.dropped_loss_terms()
    missing = [t for t in terms if t not in weights]
    unused = [w for w in weights if w not in terms and w not in dropped]
    if missing or unused:
        problems = ([f"term {', '.join(missing)} has no weight"] if missing else []) + \
                   ([f"weight {', '.join(unused)} has no term"] if unused else [])
        raise TrainingError(f"training {method.spec} ({method.variant}) with recipe {recipe.method}/{recipe.dataset}: "
                            f"{'; '.join(problems)} (the method's terms: {', '.join(terms)}; the recipe's "
                            f"loss_weights: {', '.join(weights) or 'none'})")
    return {t: weights[t] for t in terms}


def weighted_loss(terms: dict[str, torch.Tensor], weights: dict[str, float], method: VideoMethod) -> torch.Tensor:
    """The loss: sum over terms of weight * term; the terms must be those the weights were resolved for."""
    if set(terms) != set(weights):
        raise TrainingError(f"{method.spec} ({method.variant}): loss() returned {', '.join(terms)}, where its "
                            f"weights are for {', '.join(weights)}")
    return sum(weights[name] * value for name, value in terms.items())


def learning_rate_factor(recipe: Recipe, iteration: int) -> float:
    """The multiplier of every group's base rate at ``iteration``: warm-up, then the schedule (mmseg's
    poly: (1 - i / N)^power scaled between the rate and ``min_lr``)."""
    warmup = recipe.warmup
    steps, ratio = int(warmup.get("iterations", 0)), float(warmup.get("ratio", 1.0))
    schedule = recipe.lr_schedule
    if schedule["type"] == "poly":
        floor = float(schedule.get("min_lr", 0.0)) / recipe.learning_rate
        factor = (1.0 - iteration / recipe.iterations) ** float(schedule["power"]) * (1.0 - floor) + floor
    elif schedule["type"] == "constant":
        factor = 1.0
    else:
        raise ValueError(f"recipe {recipe.method}/{recipe.dataset}: unknown schedule {schedule['type']!r}")
    if iteration < steps:
        if warmup.get("type", "linear") == "constant":
            return ratio
        return factor * (1.0 - (1.0 - iteration / steps) * (1.0 - ratio))  # mmcv's linear warm-up
    return factor


def train(
    method: VideoMethod,
    dataset: VideoDataset,
    recipe: Recipe | None = None,
    options: TrainingOptions | None = None,
    seed: int = 0,
    iterations: int | None = None,
) -> TrainingReport:
    """Optimise the method with its own loss as ``recipe`` says (default: its synthetic recipe), run as
    ``options`` say (device, workers, progress, mixed precision, state, log, validation; default:
    ``TrainingOptions()``); ``iterations`` replaces the recipe's. Returns the loss curve. Under
    torchrun, with DistributedDataParallel."""
    options = options or TrainingOptions()
    recipe = recipe or recipe_for(method, dataset.name, "synthetic")
    if iterations is not None:
        recipe = recipe.with_overrides(iterations=iterations)
    rank, processes = distributed.world()
    micro = recipe.micro_batch
    if recipe.batch_size % (micro * processes) and recipe.micro_batch_size is None and \
            recipe.batch_size % processes == 0:
        micro = recipe.batch_size // processes  # more processes than the paper's devices: smaller passes
        log.info("training %s: %d processes take passes of %d samples (the recipe's %d per device do not split "
                 "its batch of %d)", method.spec, processes, micro, recipe.micro_batch, recipe.batch_size)
    if recipe.batch_size % (micro * processes):
        raise TrainingError(f"training {method.spec}: a batch of {recipe.batch_size} does not split into passes of "
                            f"{micro} samples on {processes} processes; choose --batch or --micro-batch to fit")
    passes = recipe.batch_size // (micro * processes)
    device = torch.device(options.device)
    amp = resolved_amp(options.amp, recipe, device)
    torch.manual_seed(seed)
    apply_trainable(method, recipe.trainable)
    method.to(device).train()  # after the rules: what they freeze stays in evaluation mode
    weights = loss_weights(method, recipe)
    optimizer = build_optimizer(method, recipe)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: learning_rate_factor(recipe, i))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    history: list[float] = []
    start = 0
    fingerprint = _fingerprint(method, dataset, recipe, seed)
    if options.state_path is not None and Path(options.state_path).is_file():
        start, history = _load_state(options.state_path, fingerprint, method, optimizer, schedule, scaler)
        log.info("resuming %s from %s at iteration %d of %d", method.spec, options.state_path, start,
                 recipe.iterations)
    objective: torch.nn.Module = _Objective(method)
    if processes > 1:
        objective = torch.nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
    clips = TrainingClips(dataset, recipe, recipe.iterations * recipe.batch_size, seed)
    clips[0]  # a pipeline that cannot apply to this data fails here, before any step or state file
    sampler = _StepSampler(start, recipe.iterations, rank, processes, micro, recipe.batch_size)
    loader = torch.utils.data.DataLoader(clips, batch_sampler=sampler, num_workers=options.num_workers,
                                         persistent_workers=options.num_workers > 0)
    autocast = (torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])
                if amp else contextlib.nullcontext())
    batches = iter(loader)
    with Progress(recipe.iterations, f"training {method.spec}", enabled=options.progress and rank == 0,
                  initial=start) as bar:
        for step in range(start, recipe.iterations):
            waited, computed, total, terms_sum = 0.0, 0.0, 0.0, {}
            for index in range(passes):
                began = time.perf_counter()
                batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                ready = time.perf_counter()
                sync = objective.no_sync() if processes > 1 and index < passes - 1 else contextlib.nullcontext()
                with sync:
                    with autocast:
                        terms = objective(batch)
                        if method.loss_terms() is None and step == start and index == 0:
                            weights = loss_weights(method, recipe, tuple(terms))  # a method that declares none
                        loss = weighted_loss(terms, weights, method)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"training {method.spec}: loss became {loss.item()} at iteration "
                                                 f"{step}")
                    scaler.scale(loss / passes).backward()
                total += loss.item() / passes
                for name, value in terms.items():
                    terms_sum[name] = terms_sum.get(name, 0.0) + value.item() / passes
                waited += ready - began
                computed += time.perf_counter() - ready
            if recipe.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(parameters, float(recipe.grad_clip["max_norm"]),
                                               float(recipe.grad_clip.get("norm_type", 2.0)))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            history.append(total)
            done = step + 1
            fields = {"loss": total, **terms_sum, "lr": optimizer.param_groups[0]["lr"],
                      "data_ms": 1000 * waited / passes, "step_ms": 1000 * computed / passes}
            bar.update(1, **{k: round(v, 4) for k, v in fields.items()})
            if rank == 0 and options.log_path and (done % options.log_every == 0 or done == recipe.iterations):
                _append_log(options.log_path, {"iteration": done, **fields, "time": time.time()})
            if options.validate_every and options.validation is not None and done % options.validate_every == 0:
                _validate(method, options, done)
            if (options.state_path is not None and options.save_every and done % options.save_every == 0
                    and done < recipe.iterations and rank == 0):
                _save_state(options.state_path, fingerprint, done, history, method, optimizer, schedule, scaler)
    if processes > 1:  # batch-norm statistics moved on each rank's own share of the last batch: keep rank 0's
        distributed.broadcast_buffers(method)
    method.eval()
    if options.state_path is not None and rank == 0:
        Path(options.state_path).unlink(missing_ok=True)
    tail = history[-max(1, len(history) // 10):]
    return TrainingReport(len(history), history[0] if history else math.nan, sum(tail) / max(1, len(tail)), history,
                          amp=amp, micro_batch=micro, loss_weights=weights,
                          dropped_loss_terms=method.dropped_loss_terms() or None,
                          trained_parameters=sum(p.numel() for p in parameters))


def resolved_amp(requested: str | None, recipe: Recipe, device: torch.device) -> str | None:
    """The mixed precision a run uses: ``requested`` ("fp16", "bf16"; "off" for none), else the recipe's
    (detectron2's AMP: fp16 autocast with a gradient scaler) where it runs on CUDA; None for full precision."""
    if requested == "off":
        return None
    if requested is not None:
        return requested
    return "fp16" if recipe.amp and device.type == "cuda" else None


def _fingerprint(method: VideoMethod, dataset: VideoDataset, recipe: Recipe, seed: int) -> dict:
    """What a state file must share with the run that resumes from it."""
    settings = recorded_recipe(recipe)
    return {"method": method.spec, "variant": method.variant, "dataset": dataset.name, "root": str(dataset.root),
            "split": dataset.split, "seed": seed, "recipe": json.loads(json.dumps(settings))}


def _save_state(path: Path, fingerprint: dict, iteration: int, history: list[float], method: VideoMethod,
                optimizer: torch.optim.Optimizer, schedule, scaler) -> None:
    """Everything a resumed run needs to end where an uninterrupted one would, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": STATE_FORMAT, "fingerprint": fingerprint, "iteration": iteration, "history": history,
               "model": method.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
               "scaler": scaler.state_dict(), "rng": torch.get_rng_state(),
               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def _load_state(path: Path, fingerprint: dict, method: VideoMethod, optimizer: torch.optim.Optimizer, schedule,
                scaler) -> tuple[int, list[float]]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged state file: say which
        raise TrainingError(f"cannot read the training state {path} ({type(error).__name__}); remove it to start "
                            "afresh") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path} is not a vssbench training state; remove it or choose another --out")
    if payload["fingerprint"] != fingerprint:
        theirs, ours = payload["fingerprint"], fingerprint
        differences = [f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in ours if theirs.get(k) != ours.get(k)
                       and k != "recipe"]
        differences += [f"recipe {k}: {theirs['recipe'].get(k)!r} -> {v!r}" for k, v in ours["recipe"].items()
                        if theirs.get("recipe", {}).get(k) != v]
        raise TrainingError(f"{path} is the state of another training run ({'; '.join(differences[:4])}); remove it "
                            "to start this one afresh, or choose another --out")
    method.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return int(payload["iteration"]), list(payload["history"])


def _append_log(path: Path, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _validate(method: VideoMethod, options: TrainingOptions, iteration: int) -> None:
    """Score the validation videos at ``options.validate_interval`` (1 for a method without key frames) with
    the dataset's official mIoU averaging, in evaluation mode, then resume; the log names both."""
    from vssbench.benchmark.runner import EvaluationOptions, evaluate
    from vssbench.methods.base import KeySchedule

    interval = options.validate_interval if method.uses_key_frames else 1
    miou_mode = options.validation.official_miou_mode
    with torch.random.fork_rng(devices=[]):  # validation draws nothing from the training's random state
        evaluation = evaluate(method, options.validation, KeySchedule(interval),
                              EvaluationOptions(device=options.device, progress=False, speed_rounds=0,
                                                miou_mode=miou_mode))
    method.train()
    record = {"iteration": iteration, "validation": {k: evaluation.metrics.get(k) for k in ("miou", "mvc8")},
              "key_interval": interval, "miou_mode": miou_mode}
    log.info("validation at iteration %d (k=%d, mIoU averaged as %s): mIoU %.2f, mVC8 %s", iteration, interval,
             miou_mode, evaluation.metrics["miou"], evaluation.metrics.get("mvc8"))
    if options.log_path:
        _append_log(options.log_path, record)


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

    A variant that shares another's trained weights (``checkpoint_variant``: TFC's thresholds share the
    model trained at 0.8) gets that variant trained as itself, whichever of them asks first. Cache names
    cover everything that changes the weights: the seed, the iterations, a digest of the recipe, of the
    training videos and of the thread count (on a CPU it changes the sums), and for a stage the
    checkpoints it started from and its parameter shapes.
    """
    cache_dir = Path(cache_dir)
    if method.checkpoint_variant != method.variant:
        torch.manual_seed(seed)
        trainee = build_method(method.spec, method.num_classes, method.checkpoint_variant)
        path = ensure_trained(trainee, train_set, cache_dir, iterations, seed, device, stage_iterations)
        load_weights(method, path, purpose="train")
        return path
    components = method.component_methods()
    if components:
        starts = []
        for component in components.values():
            # Trained as `bench train --method COMPONENT` would, from its seed's initialisation and with its
            # own trainable parameters (inside ``method`` they may be frozen, as Accel freezes its DFF).
            torch.manual_seed(seed)
            alone = build_method(component.spec, component.num_classes, component.variant)
            starts.append(ensure_trained(alone, train_set, cache_dir, iterations, seed, device, stage_iterations))
            load_weights(component, starts[-1], purpose="train")
    else:
        starts = [_ensure_segmentor(method, train_set, cache_dir, iterations, seed, device)]
    if not method.has_own_training_stage:
        return _segmentor_checkpoint(method, train_set, cache_dir, iterations, seed)
    recipe = _stage_recipe(method, train_set, iterations, stage_iterations)
    method_path = _stage_checkpoint(method, recipe, train_set, cache_dir, starts, seed)
    if method_path.is_file():
        load_weights(method, method_path, purpose="train")
        return method_path
    log.info("no cached %s (%s); training its stage", method.spec, method.variant)
    report = train(method, train_set, recipe, _resumable(method_path, device), seed)
    init = {name: weights_source(path, file_sha256(path), name)
            for name, path in zip(components or ["segmentor"], starts)}
    save_checkpoint(method, method_path, training_metadata(report, train_set, seed, starts, recipe=recipe, init=init))
    log.info("trained %s: loss %.3f -> %.3f", method.spec, report.first_loss, report.final_loss)
    return method_path


def _stage_recipe(method: VideoMethod, train_set: VideoDataset, iterations: int | None,
                  stage_iterations: int | None) -> Recipe:
    """The synthetic recipe of a method's own stage, its iterations overridden as ``ensure_trained`` says."""
    recipe = recipe_for(method, train_set.name, "synthetic")
    return recipe.with_overrides(iterations=stage_iterations or iterations or recipe.iterations)


def _stage_checkpoint(method: VideoMethod, recipe: Recipe, train_set: VideoDataset, cache_dir: Path,
                      starts: list[Path], seed: int) -> Path:
    """Where a stage trained from the checkpoints ``starts`` is cached: the seed and iterations in plain
    sight, a digest of the starting files, and :func:`_stage_digest`."""
    started_from = hashlib.sha256("".join(file_sha256(path) for path in starts).encode()).hexdigest()[:8]
    return cache_dir / (f"{method.name}-{method.preset}-{method.checkpoint_variant}-s{seed}"
                        f"-it{recipe.iterations}-from{started_from}-{_stage_digest(method, recipe, train_set)}.pt")


@dataclass(frozen=True)
class PlannedTraining:
    """One training ``ensure_trained`` would run, or find cached: what, how long, where it is cached."""

    spec: str  # METHOD:PRESET, with the variant where the method has several
    iterations: int
    checkpoint: Path | None  # None: named after checkpoints that are not trained yet
    cached: bool


def training_plan(method: VideoMethod, train_set: VideoDataset, cache_dir: Path, iterations: int | None = None,
                  seed: int = 0, stage_iterations: int | None = None) -> list[PlannedTraining]:
    """What ``ensure_trained`` would train for ``method``, in order, and what it would find in the cache,
    without training or loading anything. A stage whose starting checkpoints are not cached yet cannot
    be named (its cache name holds their digest); it is planned as to be trained."""
    cache_dir = Path(cache_dir)
    if method.checkpoint_variant != method.variant:
        torch.manual_seed(seed)
        trainee = build_method(method.spec, method.num_classes, method.checkpoint_variant)
        return training_plan(trainee, train_set, cache_dir, iterations, seed, stage_iterations)
    plan: list[PlannedTraining] = []
    starts: list[Path | None] = []
    components = method.component_methods()
    if components:
        for component in components.values():
            torch.manual_seed(seed)
            alone = build_method(component.spec, component.num_classes, component.variant)
            plan += training_plan(alone, train_set, cache_dir, iterations, seed, stage_iterations)
            starts.append(plan[-1].checkpoint)
    else:
        path = _segmentor_checkpoint(method, train_set, cache_dir, iterations, seed)
        recipe = _segmentor_recipe(method).with_overrides(iterations=iterations)
        plan.append(PlannedTraining(f"perframe:{method.segmentor_preset}", recipe.iterations, path, path.is_file()))
        starts = [path]
    if not method.has_own_training_stage:
        return plan
    recipe = _stage_recipe(method, train_set, iterations, stage_iterations)
    ready = all(path is not None and path.is_file() for path in starts)
    path = _stage_checkpoint(method, recipe, train_set, cache_dir, starts, seed) if ready else None
    plan.append(PlannedTraining(planned_spec(method), recipe.iterations, path, bool(path and path.is_file())))
    return plan


def trained_as(method: VideoMethod) -> str:
    """The plan's name of the training whose checkpoint ``ensure_trained`` returns for ``method``: its
    segmentor's for a method without a stage of its own, the variant whose weights it shares otherwise."""
    return planned_spec(method) if method.has_own_training_stage else f"perframe:{method.segmentor_preset}"


def planned_spec(method: VideoMethod) -> str:
    """How a plan names a training: METHOD:PRESET, and the variant trained where the method has several."""
    return method.spec if len(type(method).variants) == 1 else f"{method.spec} ({method.checkpoint_variant})"


AUTO_SAVE_EVERY = 200  # iterations between the states of auto-training: well under a minute of tiny-preset work


def _resumable(checkpoint: Path, device: torch.device | str) -> TrainingOptions:
    """Auto-training saves its state beside the checkpoint it will write, as ``bench train --save-every``
    does, so an interrupted ``bench run`` resumes it (to the same weights) instead of starting over."""
    return TrainingOptions(device=str(device), state_path=checkpoint.with_name(checkpoint.name + ".state"),
                           save_every=AUTO_SAVE_EVERY)


def _segmentor_checkpoint(method: VideoMethod, train_set: VideoDataset, cache_dir: Path, iterations: int | None,
                          seed: int) -> Path:
    # The seed and iteration count in plain sight; the segmentor's revision when it is past the first (a
    # changed computation never reuses weights); a digest of the recipe, the videos and the threads.
    recipe = _segmentor_recipe(method).with_overrides(iterations=iterations)
    revision = SEGMENTORS[method.segmentor_preset][0].revision
    suffix = f"-r{revision}" if revision > 1 else ""
    return cache_dir / (f"perframe-{method.segmentor_preset}{suffix}-s{seed}-it{recipe.iterations}"
                        f"-{_training_digest(recipe, train_set)}.pt")


def _training_digest(recipe: Recipe, train_set: VideoDataset, *extra: object) -> str:
    """8 hex digits of what a cached training depends on beyond its seed and starting weights: the recipe
    as recorded, the training videos (``--max-videos`` never reaches them, but another split or data root
    may) and the thread count, which on a CPU changes the order of the sums."""
    settings = [recorded_recipe(recipe), train_set.selection(), torch.get_num_threads(), *extra]
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _stage_digest(method: VideoMethod, recipe: Recipe, train_set: VideoDataset) -> str:
    """:func:`_training_digest` with the method's parameter names and shapes: a stage's cache name changes
    with its schedule, sampling, loss weights, training videos or architecture."""
    shapes = [(name, list(tensor.shape)) for name, tensor in method.state_dict().items()]
    return _training_digest(recipe, train_set, shapes)


def _segmentor_recipe(method: VideoMethod) -> Recipe:
    from vssbench.recipes import load

    return load("perframe", "synthetic", method.segmentor_preset)


def _ensure_segmentor(method: VideoMethod, train_set: VideoDataset, cache_dir: Path, iterations: int | None,
                      seed: int, device: torch.device | str) -> Path:
    """Load the method's segmentor from the cache, training the per-frame segmentor first if needed."""
    segmentor_path = _segmentor_checkpoint(method, train_set, cache_dir, iterations, seed)
    if not segmentor_path.is_file():
        log.info("no cached %s segmentor; training it on %s/%s", method.segmentor_preset, train_set.name, train_set.split)
        torch.manual_seed(seed)  # the same initialisation as `bench train --method perframe:...` gives
        segmentor_method = build_method(f"perframe:{method.segmentor_preset}", method.num_classes)
        recipe = recipe_for(segmentor_method, train_set.name, "synthetic").with_overrides(iterations=iterations)
        report = train(segmentor_method, train_set, recipe, _resumable(segmentor_path, device), seed)
        save_checkpoint(segmentor_method, segmentor_path,
                        training_metadata(report, train_set, seed, recipe=recipe,
                                          init=initial_weights(segmentor_method, recipe, random_init=True)))
        log.info("trained %s: loss %.3f -> %.3f", segmentor_method.spec, report.first_loss, report.final_loss)
    load_weights(method, segmentor_path, purpose="train")
    return segmentor_path


def weights_source(file: str | Path, sha256: str, component: str) -> dict[str, str]:
    """How a training record names the weights one component started from."""
    return {"file": Path(file).name, "sha256": sha256, "component": component}


def initial_weights(method: VideoMethod, recipe: Recipe, records: list[LoadRecord] | tuple = (),
                    random_init: bool = False) -> dict[str, object]:
    """The ``init`` record of a training: for each component the recipe's ``init`` names, the loaded file
    that covers it (``records``, the loads of ``bench train --init``), or "random" with ``random_init``;
    files loaded into no named component are recorded under their own; ``all: random`` when nothing
    was named or loaded. A named component that nothing covers, without ``random_init``, is a
    :class:`TrainingError` naming it and the weights the recipe starts it from."""
    init: dict[str, object] = {}
    for component in recipe.init:
        module = _component_module(method, component)
        covering = [r for r in records if r.module == "" or module == r.module or module.startswith(r.module + ".")]
        if covering:
            init[component] = weights_source(covering[-1].file, covering[-1].sha256, covering[-1].component)
        elif random_init:
            init[component] = "random"
        else:
            raise TrainingError(f"the {recipe.name} recipe of {method.spec} ({recipe.method}/{recipe.dataset}) "
                                f"starts its {component} from {recipe.init[component]}: pass --init {component}=PATH, "
                                f"or --random-init to start it from random weights (recorded as init: random)")
    for record in records:
        if not any(isinstance(v, dict) and v["sha256"] == record.sha256 for v in init.values()):
            init[record.component] = weights_source(record.file, record.sha256, record.component)
    return init or {"all": "random"}


def _component_module(method: VideoMethod, component: str) -> str:
    """The module path a recipe's ``init`` component names inside ``method``."""
    parts = method.weight_components()
    if component in parts:
        return parts[component]
    if component == "backbone" and "segmentor" in parts:
        return f"{parts['segmentor']}.{method.get_submodule(parts['segmentor']).backbone_path}"
    if component in method.component_methods():
        return component
    raise TrainingError(f"the recipe of {method.spec} starts a component {component!r} that the method does not "
                        f"have (its components: {', '.join([*parts, *method.component_methods()])})")


def training_metadata(report: TrainingReport, dataset: VideoDataset, seed: int,
                      started_from: list[Path] | tuple[Path, ...] = (), records: list[LoadRecord] = (),
                      recipe: Recipe | None = None, init: dict[str, object] | None = None) -> dict:
    """What a checkpoint records about how it was trained: the data (and which videos), the schedule,
    the seed, what ran (mixed precision, samples per pass, the loss weights applied and the terms
    dropped), the losses, where each component's initial weights came from (``init``: a file and its
    digest, a checkpoint of the cache, or ``random``), and the same record of each checkpoint it started
    from (a stage's segmentor), so that a result row can show, and ``bench check`` compare, the whole
    training chain behind its weights. The recipe is recorded without its ``init`` text, which says what
    the paper started from, not what this run did. ``records`` are the loads of ``started_from``; for
    weights converted from another format their format, digest and conversion are kept with them (a
    vssbench checkpoint carries its own record, copied as the file declares it, beside the sha256 vssbench
    computed of the file)."""
    provenance = {record.file: record.as_row() for record in records if record.format != "vssbench"}
    return {
        "dataset": dataset.name,
        "dataset_root": str(dataset.root),
        "split": dataset.split,
        "videos": dataset.selection(),
        "iterations": report.iterations,
        "seed": seed,
        "threads": torch.get_num_threads(),  # on a CPU it changes the sums, hence the weights (bench check)
        "amp": report.amp,
        "micro_batch": report.micro_batch,
        "loss_weights": report.loss_weights,
        **({"dropped_loss_terms": report.dropped_loss_terms} if report.dropped_loss_terms else {}),
        "trained_parameters_m": (None if report.trained_parameters is None
                                 else round(report.trained_parameters / 1e6, 4)),
        "init": init if init is not None else {},
        "first_loss": report.first_loss,
        "final_loss": report.final_loss if math.isfinite(report.final_loss) else None,
        "started_from": [{"file": Path(path).name, **checkpoint_metadata(path),
                          "sha256": weights_digest(path),
                          **({"weights": provenance[str(path)]} if str(path) in provenance else {})}
                         for path in started_from],
        **({"recipe": recorded_recipe(recipe)} if recipe else {}),
    }


def recorded_recipe(recipe: Recipe) -> dict:
    """The recipe as a checkpoint records it and a cache name digests it: every value that changes
    training, without the sources and the ``init`` text (what ran is the record's ``init``)."""
    return {k: v for k, v in recipe.as_json().items() if k not in ("sources", "init")}
