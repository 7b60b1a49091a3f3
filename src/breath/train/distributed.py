"""Data-parallel training under torchrun: one process ("rank") per device, gradients averaged by
``DistributedDataParallel``.

    torchrun --nproc_per_node=N scripts/train_phase2.py [options]      # see docs/training.md

torchrun tells every process its place through the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). ``Distributed`` reads it, starts the process group with the backend that follows
the device (NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on CPU) and gives the trainer the
few collective steps it needs: the model wrapped for data parallelism, sums of metrics over ranks,
the per-step agreement (a non-finite step on any rank is skipped by all; a stop signal on any rank
stops all after the same step), and rank 0 first for data preparation.

Without torchrun, or with one process, ``world_size`` is 1: no process group exists and every
method is the identity, so a single-process run is exactly what it was.

Every rank is seeded alike (``--seed``), so the ranks build the same model and draw the same random
numbers (dropout masks on different windows, as data-parallel ranks do in Megatron-LM); one saved
RNG state therefore resumes every rank.

Failures: a rank that fails prints ``rank N: <error>`` and leaves at once (``fail``), without the
process group's teardown (which could wait on collectives that the other ranks will never join).
torchrun sees the exit and stops the other ranks; under gloo they already fail on the lost
connection. Collectives time out (``TIMEOUT``), so a rank stuck for good cannot hold the others
forever either.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from breath.runtime import ConfigError, select_device
from breath.train.metrics import MetricAccumulator

#: how long a collective may wait for the slowest rank; the longest planned wait is rank 0 writing
#: the epoch's checkpoints while the others wait at their next step
TIMEOUT = timedelta(minutes=30)
#: how long the other ranks wait for rank 0's data preparation (download, tokenizer training and
#: encoding of a large corpus); a rank that fails meanwhile is noticed at once, not after this
DATA_TIMEOUT = timedelta(hours=4)

_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
T = TypeVar("T")


@dataclass
class Distributed:
    """This process's place in a data-parallel run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank within its machine: the index of its GPU
    device: torch.device | None = None  # set by start()
    _data_group: dist.ProcessGroup | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_env(cls) -> "Distributed":
        """The place torchrun gave this process; rank 0 of 1 when not started by torchrun."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, logs and writes files."""
        return self.rank == 0

    # ------------------------------------------------------------------------------ lifetime
    def start(self, device: str | None) -> torch.device:
        """This rank's device for ``--device`` and, with several ranks, the process group.

        With several ranks ``--device`` names only the kind: each rank trains on ``cuda:LOCAL_RANK``
        (NCCL between them) or on the CPU (gloo).
        """
        if self.world_size == 1:
            self.device = select_device(device)
            return self.device
        kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if kind == "cuda":
            select_device(kind)  # checks that CUDA is there
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError("--nproc-per-node", f"torchrun started local rank {self.local_rank}, but this "
                                  f"machine has {torch.cuda.device_count()} CUDA device(s); allowed: one process "
                                  "per GPU")
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)  # before NCCL starts: it binds to the current device
            dist.init_process_group("nccl", timeout=TIMEOUT, device_id=self.device)
        elif kind == "cpu":
            self.device = torch.device("cpu")
            dist.init_process_group("gloo", timeout=TIMEOUT)
        else:
            raise ConfigError("--device", f"got {device!r} with {self.world_size} processes; allowed: cuda (each "
                              "rank on cuda:LOCAL_RANK) | cpu")
        # A CPU group of its own for the wait on rank 0's data preparation: its timeout can be long
        # without making the training collectives wait as long.
        self._data_group = dist.new_group(backend="gloo", timeout=DATA_TIMEOUT)
        return self.device

    def close(self) -> None:
        """End the process group (after a run that ended normally on every rank)."""
        if dist.is_initialized():
            dist.destroy_process_group()

    def fail(self, message: str, code: int) -> int:
        """Report a failure on stderr and return the exit code; with several ranks, ``rank N:`` goes
        first and the process exits at once, so that torchrun stops the other ranks."""
        if self.world_size == 1:
            print(message, file=sys.stderr)
            return code
        print(f"rank {self.rank}: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """On ranks other than 0, silence stdout and stderr: their progress would repeat rank 0's.
        Failures are reported after leaving this context (``fail``)."""
        if self.is_main:
            yield
            return
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
                contextlib.redirect_stderr(devnull):
            yield

    # ----------------------------------------------------------------------------- training
    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` as it is called for training: itself, or with several ranks inside
        ``DistributedDataParallel``, which averages the gradients over the ranks during backward.

        Every parameter of every architecture gets a gradient in every step (tests/test_distributed.py),
        so DDP's fast path without ``find_unused_parameters`` applies; the LM head's weight *is* the
        embedding's (one parameter, reduced once). The only buffers (the memory's zeta basis) are
        constants, so they are not re-broadcast before every forward.
        """
        if self.world_size == 1:
            return model
        with warnings.catch_warnings():  # torch 2.13 renames it forward_sync_buffers; both mean this
            warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
            device_ids = [self.local_rank] if self.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> None:
        """Reduce ``tensor`` in place over the ranks: ``op`` is "sum", "min" or "max"."""
        if self.world_size > 1:
            dist.all_reduce(tensor, _OPS[op])

    def combine(self, accumulator: MetricAccumulator) -> None:
        """Make ``accumulator`` hold the statistics of every rank (in place, on every rank)."""
        if self.world_size > 1:
            accumulator.reduce(self.all_reduce)

    def max_over_ranks(self, *values: torch.Tensor | float) -> list[float]:
        """The largest of each value over the ranks, on the host: one collective, one host read."""
        if self.world_size == 1:
            return [float(value) for value in values]
        flags = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in values])
        self.all_reduce(flags, "max")
        return flags.tolist()

    def main_first(self, prepare: Callable[[], T]) -> T:
        """``prepare()`` on every rank, rank 0 first: it fills the data cache (download, tokenizer,
        encoding) while the others wait. Then the first rank of each other machine, which fills
        that machine's cache if the cache is not shared, then all the rest, which only read it."""
        if self.world_size == 1:
            return prepare()
        turn = 0 if self.is_main else 1 if self.local_rank == 0 else 2
        for phase in range(3):
            if phase == turn:
                result = prepare()
            dist.barrier(group=self._data_group)
        return result
