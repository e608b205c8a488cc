"""Several processes under ``torchrun``: the process group, video shards and merged results.

``torchrun --nproc_per_node N -m vssbench run ...`` starts N processes (``--nnodes`` and a
rendezvous endpoint for several machines); the backend is nccl on GPUs and gloo on CPUs.

* Evaluation: process r takes videos r, r + N, r + 2N, ... of the split; after the pass
  the metric states are gathered and merged in the videos' order, so the row holds
  exactly the single-process metrics (the confusion matrix is an integer sum; the VC sums
  are added video by video in the same order). Latency samples of all processes pool.
* Training: DistributedDataParallel. Process r draws samples r, r + N, ... of the same
  seeded sample sequence, with the recipe's batch split across processes, so each global
  batch holds the samples the single-process run would draw; gradients are averaged and
  parameters and buffers broadcast from rank 0, so all ranks end with identical weights.
* Only rank 0 writes result files and checkpoints, and trains missing weights first while
  the others wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return world()[0] == 0


def init_from_environment(device: str) -> None:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (training and caching missing weights), then the others."""
    rank, size = world()
    if size > 1 and rank != 0:
        dist.barrier()
    yield
    if size > 1 and rank == 0:
        dist.barrier()


def shard(items: list[T]) -> tuple[list[T], list[int]]:
    """This process's share of ``items`` (every N-th, from its rank) and their indices."""
    rank, size = world()
    indices = list(range(rank, len(items), size))
    return [items[i] for i in indices], indices


def gather(value: T) -> list[T]:
    """``value`` of every process, by rank (picklable objects)."""
    _, size = world()
    if size == 1:
        return [value]
    values: list = [None] * size
    dist.all_gather_object(values, value)
    return values


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (batch-norm running statistics)."""
    for buffer in module.buffers():
        dist.broadcast(buffer, 0)
