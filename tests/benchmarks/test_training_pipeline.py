"""Does loading bound training? Samples per second of the training data pipeline against the training
step's, measured in one run (`pytest tests/benchmarks --benchmark-only -k pipeline`).

For each recipe (the synthetic one: resize and flip; the paper one: MPVSS's VSPW pipeline with a
64x96 crop, i.e. shortest-edge resizing up to 960 pixels, crop, photometric distortion, flip, pad),
one benchmark times drawing training samples in the main process and, in alternation, optimiser
steps of mpvss:tiny on batches of the same samples. The ratio (samples per second of the pipeline over
samples per second of the step) is stored in extra_info and printed: below 1, one loading process
bounds training and `bench train --num-workers` should exceed 1 / ratio.
"""

import time

import pytest
import torch

from vssbench.benchmark.training import TrainingClips, build_optimizer
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import build_method
from vssbench.recipes import load

ROUNDS, BATCH = 3, 2


@pytest.mark.parametrize("kind", ["synthetic", "paper"])
def test_data_pipeline_against_the_training_step(benchmark, small_synthetic, kind):
    dataset = load_synthetic(small_synthetic, "train")
    recipe = load("mpvss", "synthetic") if kind == "synthetic" else load("mpvss", "vspw").with_overrides(
        crop_size=(64, 96))
    clips = TrainingClips(dataset, recipe, 10_000, seed=0)
    torch.manual_seed(0)
    method = build_method("mpvss:tiny", dataset.num_classes).train()
    optimizer = build_optimizer(method, recipe)

    def rounds() -> list[float]:
        ratios = []
        for round_index in range(ROUNDS):
            started = time.perf_counter()
            samples = [clips[round_index * BATCH + i] for i in range(BATCH)]
            loading = (time.perf_counter() - started) / BATCH
            batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
            started = time.perf_counter()
            loss = sum(method.loss(batch).values())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            stepping = (time.perf_counter() - started) / BATCH
            ratios.append(stepping / loading)
        return sorted(ratios)

    ratios = benchmark.pedantic(rounds, rounds=1, iterations=1)
    ratio = ratios[len(ratios) // 2]
    benchmark.extra_info.update(pipeline_over_step=ratio, rounds=ratios, recipe=kind)
    print(f"\n{kind} pipeline: {ratio:.2f}x the step's samples per second (rounds {', '.join(f'{r:.2f}' for r in ratios)})")
