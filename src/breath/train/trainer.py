"""The training loop and its small parts: optimizer, schedule, precision, stop requests, state.

``Trainer`` takes a built model, a ``TrainConfig`` and the train/val window datasets; it knows
nothing of the command line. One optimizer step per batch:

    forward (bf16 autocast on CUDA) → cross-entropy → backward → clip → finite? → AdamW step

Validation (every epoch end, every ``eval_every`` steps) computes the loss ``breath eval`` does
(``breath.loss``: float32 whatever ``--precision``), so the two agree on the same windows.

Host synchronisation is kept to one boolean per step (is the loss/gradient finite? as AMP's
GradScaler does); the loss and the model's diagnostics are summed on the device and read only
every ``log_every`` steps and at epoch ends.

Stopping: SIGINT/SIGTERM finish the current step, then ``checkpoint_interrupted.pt`` is written
and ``fit`` returns status "interrupted" (a second signal stops at once). ``max_bad_steps``
consecutive non-finite steps (each skipped) end the run with ``checkpoint_diverged.pt``.
``early_stopping_patience`` N ends a run (status "completed") once N epoch-end validations in a
row have not improved on the best, which ``best_model.pt`` holds.

Exact resume: a checkpoint carries, beside the seed's keys, ``trainer_state`` (position in the
epoch, metric accumulators, bad-step counters, RNG states), so a resumed run takes the same steps
with the same losses as an uninterrupted one.

Data parallel (``breath.train.distributed``, under torchrun): every rank trains on its own shard of
each batch's windows (``batch_size`` per rank: the global batch is ``batch_size × world_size``)
through ``DistributedDataParallel``; validation sums and logged metrics are combined over the
ranks; only rank 0 logs, prints and writes files. The per-step host read becomes one collective
that also carries the stop signal, so all ranks skip the same steps and stop after the same one.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import breath
from breath import plots
from breath.data.windows import make_loader
from breath.io import atomic_write_json
from breath.loss import perplexity, position_loss_sums
from breath.models import ModelConfig
from breath.runs import check_compatible
from breath.runtime import ConfigError, say
from breath.train.checkpoint import save_checkpoint
from breath.train.config import TrainConfig, run_config, select_precision
from breath.train.distributed import Distributed
from breath.train.metrics import (JsonlLog, MetricAccumulator, MetricsLogger, ProgressBar, WandbLog,
                                  diagnostics_by_name, format_epoch_summary, prefixed, read_jsonl)

HISTORY_LISTS = ("train_losses", "val_losses", "learning_rates", "gamma_history", "snr_history",
                 "resonance_history", "stability_history")
# per-epoch history entry → its fields: the diagnostics' names (the train/ metrics of the epoch)
HISTORY_FIELDS = {
    "gamma_history": ("mean_gamma", "std_gamma", "min_gamma", "max_gamma", "mean_effective_gamma"),
    "snr_history": ("mean_snr", "low_snr_ratio"),
    "resonance_history": ("num_resonant_modes", "total_resonance_energy"),
    "stability_history": ("lyapunov_stable_ratio", "mean_fast_weight_energy"),
}
# the fields of entries saved by older versions → today's names (resuming such a run)
OLD_HISTORY_FIELDS = {
    "gamma_history": {"mean": "mean_gamma", "std": "std_gamma", "min": "min_gamma", "max": "max_gamma"},
    "snr_history": {"mean": "mean_snr", "low_ratio": "low_snr_ratio"},
    "resonance_history": {"num_modes": "num_resonant_modes", "energy": "total_resonance_energy"},
    "stability_history": {"stable_ratio": "lyapunov_stable_ratio", "fast_weight_energy": "mean_fast_weight_energy"},
}
SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


# ------------------------------------------------------------------------------ optimizer, schedule


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: not on norms, biases or embeddings."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, plain = [], []
    for param in model.parameters():
        if param.requires_grad:
            (plain if param.dim() < 2 or id(param) in no_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95))


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warmup, then cosine decay."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    # A partial (not a lambda or a closure): its state is not saved, so the schedule always comes
    # from the current options, and the scheduler's state_dict holds only plain numbers.
    schedule = partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# --------------------------------------------------------------------------------- stop requests


class StopRequest:
    """While active, SIGINT/SIGTERM set ``signal`` instead of killing the process, so the loop
    can finish its step and save; a second signal raises ``KeyboardInterrupt`` at once, unless
    ``repeat_stops_at_once`` is off.

    It is off for the ranks of a data-parallel run: torchrun forwards the signal it gets to every
    worker, and a cluster scheduler may signal the workers as well, so one request can arrive twice.
    torchrun kills workers that are still running after its shutdown timeout.
    """

    def __init__(self, repeat_stops_at_once: bool = True) -> None:
        self.signal: int | None = None
        self.repeat_stops_at_once = repeat_stops_at_once
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            if self.repeat_stops_at_once:
                raise KeyboardInterrupt
            return
        self.signal = signum  # no printing here: the handler may interrupt a write to the console

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNAL_EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


# ---------------------------------------------------------------------------------------- trainer


@dataclass
class TrainResult:
    """How ``fit`` ended: "completed", "interrupted" (signal) or "diverged" (non-finite steps)."""

    status: str
    epoch: int
    global_step: int
    best_val_loss: float
    checkpoint: Path | None = None
    signal: int | None = None
    bad_steps: int = 0


class Trainer:
    """Trains ``model`` on packed windows; writes checkpoints, history, metrics and plots.

    ``dist`` places it in a data-parallel run (started with ``Distributed.start``); by default it
    is the only process. ``model`` stays the plain module (its state dict is what checkpoints hold);
    ``model_fn``, what the steps call, is it wrapped for data parallelism and compiled as asked.
    """

    def __init__(self, model: nn.Module, model_cfg: ModelConfig, cfg: TrainConfig, train_set: Dataset,
                 val_set: Dataset, device: torch.device, dist: Distributed | None = None):
        self.model = model.to(device)
        self.model_cfg, self.cfg, self.device = model_cfg, cfg, device
        self.dist = dist or Distributed()
        self.train_set, self.val_set = train_set, val_set
        self.output_dir = Path(cfg.output_dir)
        self.wandb: WandbLog | None = None
        self.autocast_dtype = select_precision(cfg.precision, device)
        wrapped = self.dist.wrap(self.model)
        self.model_fn = torch.compile(wrapped) if cfg.compile else wrapped

        world_size = self.dist.world_size
        self.global_batch_size = cfg.batch_size * world_size
        per_rank = len(train_set) // world_size  # windows in each rank's shard of an epoch
        if per_rank < cfg.batch_size:
            ranks = f", {per_rank} for each of {world_size} ranks" if world_size > 1 else ""
            raise ConfigError("--batch-size", f"got {cfg.batch_size}, but the train split has only "
                              f"{len(train_set)} windows of --n-seq {model_cfg.n_seq}{ranks}; allowed: "
                              f"1..{per_rank} (or a smaller --n-seq)")
        if len(val_set) < world_size:
            raise ConfigError("--n-seq", f"the val split has {len(val_set)} windows of --n-seq {model_cfg.n_seq}, "
                              f"fewer than the {world_size} ranks; allowed: a smaller --n-seq or fewer processes")
        self.steps_per_epoch = per_rank // cfg.batch_size
        if cfg.num_train_batches is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.num_train_batches)
        self.total_steps = self.steps_per_epoch * cfg.num_epochs
        self.warmup_steps = (round(0.05 * self.total_steps) if cfg.warmup_steps is None
                             else cfg.warmup_steps)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps, cfg.min_lr_ratio)

        # Progress and history (all saved in checkpoints).
        self.epoch = 0  # completed epochs
        self.global_step = 0  # batches processed, skipped ones included
        self.batch_in_epoch = 0  # batches processed in the current, unfinished epoch
        self.best_val_loss = math.inf
        self.history: dict[str, list] = {key: [] for key in HISTORY_LISTS}
        self.bad_steps = 0
        self.consecutive_bad_steps = 0
        self.epoch_time_s = 0.0
        self.window = MetricAccumulator()  # since the last log point
        self.epoch_metrics = MetricAccumulator()  # since the epoch started
        self._pending_rng: dict[str, Any] | None = None
        self._stop = StopRequest(repeat_stops_at_once=world_size == 1)
        self._step_signal: int | None = None  # the stop signal agreed at the last step's host read

    # ---------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: the seed's keys, plus ``learning_rates`` and ``trainer_state``."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":  # the training device's generator: the same on every rank
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_val_loss": self.best_val_loss,
            "model_state_dict": self.model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict(),
            "config": run_config(self.cfg, self.model_cfg),
            **self.history,
            "trainer_state": {
                "batch_in_epoch": self.batch_in_epoch,
                "world_size": self.dist.world_size,
                "bad_steps": self.bad_steps,
                "consecutive_bad_steps": self.consecutive_bad_steps,
                "epoch_time_s": self.epoch_time_s,
                "window": self.window.state_dict(),
                "epoch_metrics": self.epoch_metrics.state_dict(),
                "rng": rng,
                "wandb_run_id": self.wandb.run_id if self.wandb is not None else None,
            },
            "breath_version": breath.__version__,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint (as loaded by ``load_checkpoint``), on every rank.

        The position in the epoch is kept as windows of the epoch's order already taken (batches
        × the global batch they were taken in), so a run may resume with another number of ranks
        or ``--batch-size``: it continues at ``⌊taken / global batch⌋`` batches (the same place when
        that divides, else up to one global batch earlier), and the schedule moves to the step of
        the same progress. With the same global batch the resumed run is exact.
        """
        check_compatible(checkpoint["model_state_dict"], self.model)
        state = checkpoint.get("trainer_state", {})
        saved_global_batch = checkpoint["config"]["train"]["batch_size"] * state.get("world_size", 1)
        self.model.load_state_dict(checkpoint["model_state_dict"])
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        except (ValueError, KeyError) as exc:
            raise ConfigError("--resume", f"the optimizer state does not fit this model ({exc})") from None
        self.scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
        if saved_global_batch != self.global_batch_size:  # as many windows seen, in steps of the new size
            self.scheduler.last_epoch = round(self.scheduler.last_epoch * saved_global_batch
                                              / self.global_batch_size)
        # Hyperparameters come from the current options (so a resumed run may lower the learning
        # rate); the moments and step counts come from the checkpoint.
        self.scheduler.base_lrs = [self.cfg.learning_rate] * len(self.optimizer.param_groups)
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.learning_rate * factor
        self.optimizer.param_groups[0]["weight_decay"] = self.cfg.weight_decay  # the decayed group

        self.epoch = checkpoint["epoch"]
        self.global_step = checkpoint["global_step"]
        self.best_val_loss = checkpoint["best_val_loss"]
        self.history = {key: list(checkpoint.get(key, [])) for key in self.history}
        for key, old in OLD_HISTORY_FIELDS.items():
            self.history[key] = [{old.get(field, field): value for field, value in entry.items()}
                                 for entry in self.history[key]]
        taken = state.get("batch_in_epoch", 0) * saved_global_batch
        self.batch_in_epoch = taken // self.global_batch_size
        if self.batch_in_epoch > self.steps_per_epoch:
            raise ConfigError("--resume", f"the checkpoint stopped after {taken} windows of its epoch, but an "
                              f"epoch now has {self.steps_per_epoch} batches of {self.global_batch_size}; "
                              "keep --n-seq and --num-train-batches as they were")
        self.bad_steps = state.get("bad_steps", 0)
        self.consecutive_bad_steps = state.get("consecutive_bad_steps", 0)
        self.epoch_time_s = state.get("epoch_time_s", 0.0)
        if "window" in state:
            self.window.load_state_dict(state["window"], self.device)
            self.epoch_metrics.load_state_dict(state["epoch_metrics"], self.device)
            if not self.dist.is_main:  # the saved sums are every rank's already: rank 0 carries them
                self.window.zero_()
                self.epoch_metrics.zero_()
        self._pending_rng = state.get("rng")

    def _restore_rng(self) -> None:
        if self._pending_rng is not None:
            torch.set_rng_state(self._pending_rng["torch"])
            cuda = self._pending_rng.get("cuda")
            if isinstance(cuda, list) and torch.cuda.is_available():  # older: every device's generator
                torch.cuda.set_rng_state_all(cuda)
            elif cuda is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(cuda, self.device)
            self._pending_rng = None

    # ----------------------------------------------------------------------------- loop
    def fit(self, wandb: WandbLog | None = None) -> TrainResult:
        """Train until ``num_epochs`` are done, a stop signal, or too many non-finite steps;
        every record also goes to ``wandb`` when given (rank 0's: the other ranks log nothing)."""
        self.wandb = wandb
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.logger = MetricsLogger(JsonlLog(self.output_dir / "metrics.jsonl", self.global_step), self.wandb)
        try:
            with self._stop:
                while self.epoch < self.cfg.num_epochs:
                    result = self._run_epoch()
                    if result is not None:
                        return result
                    # a signal during the epoch's end: every rank must see it to stop together
                    signal_number = int(self.dist.max_over_ranks(self._stop.signal or 0)[0])
                    if signal_number:
                        return self._stop_for_signal(signal_number)
                    if self._patience_spent():
                        break
            return TrainResult("completed", self.epoch, self.global_step, self.best_val_loss,
                               bad_steps=self.bad_steps)
        finally:
            if self.dist.is_main:
                self.logger.close()

    def _patience_spent(self) -> bool:
        """Whether the last ``early_stopping_patience`` validations all failed to improve on the best
        (read from the history, so a resumed run counts the epochs before it too)."""
        patience, losses = self.cfg.early_stopping_patience, self.history["val_losses"]
        if patience is None or not losses:
            return False
        since_best = len(losses) - 1 - min(range(len(losses)), key=losses.__getitem__)
        if since_best < patience:
            return False
        if self.dist.is_main:
            say(f"early stop: validation has not improved for {since_best} epochs "
                f"(--early-stopping-patience {patience}); best val loss {self.best_val_loss:.4f}")
        return True

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches, starting after those a resumed checkpoint already took.

        The RNG is restored where the original run stood: before the loader's iterator is made
        (it draws a seed) at an epoch start, after skipping batches in mid-epoch.
        """
        loader = make_loader(self.train_set, self.cfg.batch_size, shuffle=True, seed=self.cfg.seed,
                             epoch=self.epoch, rank=self.dist.rank, world_size=self.dist.world_size,
                             drop_last=True)
        if self.batch_in_epoch == 0:
            self._restore_rng()
        batches = iter(loader)
        for _ in range(self.batch_in_epoch):
            next(batches)
        self._restore_rng()
        for _ in range(self.steps_per_epoch - self.batch_in_epoch):
            yield next(batches)

    def _run_epoch(self) -> TrainResult | None:
        epoch_number = self.epoch + 1
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        bar = ProgressBar(self.steps_per_epoch, self.batch_in_epoch, f"epoch {epoch_number}/{self.cfg.num_epochs}",
                          enabled=self.dist.is_main)
        started = window_started = time.perf_counter()
        window_tokens = 0
        try:
            for input_ids, labels in self._batches():
                self._train_step(input_ids.to(self.device, non_blocking=True),
                                 labels.to(self.device, non_blocking=True))
                self.global_step += 1
                self.batch_in_epoch += 1
                window_tokens += labels.numel() * self.dist.world_size
                bar.advance()
                last = self.batch_in_epoch == self.steps_per_epoch
                if self.global_step % self.cfg.log_every == 0 or (last and self.window):
                    now = time.perf_counter()
                    self._log_window(epoch_number, window_tokens / max(now - window_started, 1e-9), bar)
                    window_started, window_tokens = now, 0
                if self.cfg.eval_every and self.global_step % self.cfg.eval_every == 0 and not last:
                    eval_started = time.perf_counter()
                    val_loss = self.evaluate()
                    self._log({"step": self.global_step, "epoch": epoch_number,
                               "val/loss": val_loss, "val/perplexity": perplexity(val_loss)})
                    window_started += time.perf_counter() - eval_started  # not training throughput
                if self.consecutive_bad_steps >= self.cfg.max_bad_steps:
                    self.epoch_time_s += time.perf_counter() - started
                    return self._stop_for_divergence()
                signal_number = self._stop.signal if self.dist.world_size == 1 else self._step_signal
                if signal_number is not None:
                    self.epoch_time_s += time.perf_counter() - started
                    return self._stop_for_signal(signal_number)
        finally:
            bar.close()
        self.epoch_time_s += time.perf_counter() - started
        self._end_epoch(epoch_number)
        return None

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _train_step(self, input_ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.model.train()
        with self._autocast():
            out = self.model_fn(input_ids, return_diagnostics=True)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), labels.flatten())
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.gradient_clip_norm)
        # The one host read per step. With several ranks it is agreed: a step that is not finite on
        # one rank is skipped by all, and a stop signal that one rank got stops all after this step
        # (a single process checks its signal after the step instead, as it always did).
        bad, signal_number = self.dist.max_over_ranks(~torch.isfinite(loss.detach() + grad_norm),
                                                      self._stop.signal or 0)
        self._step_signal = int(signal_number) or None
        if not bad:
            self.optimizer.step()
            self.scheduler.step()
            self.consecutive_bad_steps = 0
            stats = {"loss": loss.detach(), **diagnostics_by_name(out.diagnostics)}
            self.window.add({k: v for k, v in stats.items() if not k.startswith("per_layer/")})
            self.epoch_metrics.add(stats)
        else:  # skip the update and the schedule: the model stays at its last good state
            self.bad_steps += 1
            self.consecutive_bad_steps += 1
        self.optimizer.zero_grad(set_to_none=True)

    def _log_window(self, epoch_number: int, tokens_per_sec: float, bar: ProgressBar) -> None:
        record = {"step": self.global_step, "epoch": epoch_number,
                  **prefixed(self._read(self.window), "batch"),
                  "batch/lr": self.scheduler.get_last_lr()[0],
                  "batch/tokens_per_sec": tokens_per_sec,
                  "batch/bad_steps": self.bad_steps}
        self.window.reset()
        bar.show(record)
        self._log(record)

    def _read(self, accumulator: MetricAccumulator) -> dict[str, float | list[float]]:
        """An accumulator's statistics over all ranks (every rank must call this at the same point)."""
        self.dist.combine(accumulator)
        return accumulator.read()

    def _log(self, record: dict[str, Any]) -> None:
        """A record for metrics.jsonl and W&B: rank 0 writes it."""
        if self.dist.is_main:
            self.logger.log(record)

    def evaluate(self) -> float:
        """Mean token cross-entropy over the validation windows (``num_val_batches`` batches at most),
        computed as ``breath eval`` computes it (``breath.loss``: in fp32, whatever ``--precision``).

        Each rank takes its shard of the windows; the loss sums and token counts are added over
        the ranks, so every rank returns the mean over all of them.
        """
        self.model.eval()
        loader = make_loader(self.val_set, self.cfg.batch_size, shuffle=False, rank=self.dist.rank,
                             world_size=self.dist.world_size, drop_last=False)
        position_sums, windows = position_loss_sums(self.model_fn, loader, self.device, self.cfg.num_val_batches)
        self.model.train()
        tokens = windows * position_sums.numel()
        sums = torch.stack([position_sums.sum(), torch.tensor(tokens, dtype=torch.float64, device=self.device)])
        self.dist.all_reduce(sums)
        loss_sum, token_count = sums.tolist()
        return loss_sum / token_count

    # ------------------------------------------------------------------------ epoch end
    def _end_epoch(self, epoch_number: int) -> None:
        stats = self._read(self.epoch_metrics)
        val_loss = self.evaluate()
        train_loss = stats.pop("loss", math.nan)
        record = {"step": self.global_step, "epoch": epoch_number,
                  "train/loss": train_loss, "train/perplexity": perplexity(train_loss),
                  "val/loss": val_loss, "val/perplexity": perplexity(val_loss),
                  **prefixed(stats, "train"),
                  "epoch/time_s": self.epoch_time_s,
                  "epoch/peak_vram_mb": (torch.cuda.max_memory_allocated(self.device) / 2**20
                                         if self.device.type == "cuda" else None),
                  "epoch/bad_steps": self.bad_steps}
        self._append_history(record)
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss = val_loss

        # The epoch is complete: reset the in-epoch state before saving, so checkpoints of this
        # moment resume at the next epoch.
        self.epoch, self.batch_in_epoch, self.epoch_time_s = epoch_number, 0, 0.0
        self.epoch_metrics.reset()
        if self.dist.is_main:
            self._write_epoch(record, improved)

    def _write_epoch(self, record: dict[str, Any], improved: bool) -> None:
        """Rank 0's part of an epoch end: log, print, checkpoints, history, plots."""
        epoch_number = record["epoch"]
        self.logger.log(record)
        self.logger.sync()
        say(format_epoch_summary(record, self.cfg.num_epochs, self.best_val_loss))
        state = self.state_dict()
        if improved:
            save_checkpoint(self.output_dir / "best_model.pt", state)
        if epoch_number % self.cfg.save_every == 0 or epoch_number == self.cfg.num_epochs:
            save_checkpoint(self.output_dir / f"checkpoint_epoch{epoch_number}.pt", state)
        self.write_history()
        plots.write_plots(self.output_dir, read_jsonl(self.output_dir / "metrics.jsonl"))

    def _append_history(self, record: dict[str, Any]) -> None:
        self.history["train_losses"].append(record["train/loss"])
        self.history["val_losses"].append(record["val/loss"])
        self.history["learning_rates"].append(self.scheduler.get_last_lr()[0])
        for key, fields in HISTORY_FIELDS.items():
            self.history[key].append({name: record.get(f"train/{name}") for name in fields})

    def write_history(self) -> None:
        """``training_history.json``: exactly the seed's keys."""
        atomic_write_json(self.output_dir / "training_history.json",
                          {**self.history, "best_val_loss": self.best_val_loss, "total_epochs": self.epoch})

    # ------------------------------------------------------------------------- stopping
    def _save_stop_checkpoint(self, name: str) -> Path:
        """Every rank stops here; rank 0 saves the statistics of all of them."""
        self.dist.combine(self.window)
        self.dist.combine(self.epoch_metrics)
        path = self.output_dir / name
        if self.dist.is_main:
            self.logger.sync()
            save_checkpoint(path, self.state_dict())
        return path

    def _stop_for_signal(self, signal_number: int) -> TrainResult:
        path = self._save_stop_checkpoint("checkpoint_interrupted.pt")
        return TrainResult("interrupted", self.epoch, self.global_step, self.best_val_loss,
                           checkpoint=path, signal=signal_number, bad_steps=self.bad_steps)

    def _stop_for_divergence(self) -> TrainResult:
        path = self._save_stop_checkpoint("checkpoint_diverged.pt")
        return TrainResult("diverged", self.epoch, self.global_step, self.best_val_loss,
                           checkpoint=path, bad_steps=self.bad_steps)
