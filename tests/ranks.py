"""Running a test's body in several gloo processes on the CPU, one thread each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def on_ranks(body: Callable[..., object], args: tuple, folder: Path, processes: int = 2) -> list:
    """``body(*args)`` in each of ``processes`` processes of one gloo group (rendezvous through a file in
    ``folder``); what each returned, by rank. ``body`` must be a module-level function (it is pickled)."""
    mp.spawn(_rank_main, args=(body, args, folder, processes), nprocs=processes, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(processes)]


def _rank_main(rank: int, body: Callable[..., object], args: tuple, folder: Path, processes: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder / 'init'}", rank=rank, world_size=processes)
    torch.set_num_threads(1)
    try:
        torch.save(body(*args), folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
