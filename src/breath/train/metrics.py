"""What a run reports: device-side metric accumulation, ``metrics.jsonl``, W&B, and the console.

Names: a diagnostic (DESIGN §6) has one name, the model's (the seed's ``mean_gamma``,
``lyapunov_stable_ratio``, ...), in the diagnostics dict, ``metrics.jsonl``, ``training_history.json``,
the epoch summary and the plots:

    step records   batch/loss, batch/lr, batch/tokens_per_sec, batch/bad_steps, batch/<diagnostic>
    epoch records  train/loss, train/perplexity, val/loss, val/perplexity, train/<diagnostic>,
                   train/per_layer/<diagnostic> (lists), epoch/time_s, epoch/peak_vram_mb

W&B alone speaks the seed's W&B names (``batch/gamma_mean``, ``train/stability_ratio``, ...):
``WANDB_NAMES`` below is that map, applied where records go to W&B. A model that does not compute
a diagnostic (phase1, transformer) simply has no such key.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from tqdm import tqdm

from breath.io import atomic_write, json_safe

#: diagnostic name → its W&B key after ``batch/`` or ``train/`` (the seed's W&B names; ours for
#: what the seed lacks). metrics.jsonl files of older versions used these keys too (see read_jsonl).
WANDB_NAMES = {
    "mean_gamma": "gamma_mean",
    "std_gamma": "gamma_std",
    "min_gamma": "gamma_min",
    "max_gamma": "gamma_max",
    "mean_effective_gamma": "effective_gamma_mean",
    "mean_snr": "snr_mean",
    "low_snr_ratio": "snr_low_ratio",
    "num_resonant_modes": "resonant_modes",
    "total_resonance_energy": "resonance_energy",
    "lyapunov_stable_ratio": "stability_ratio",
    "mean_fast_weight_energy": "fast_weight_energy",
}

WANDB_INSTALL_HINT = ('--use-wandb: the wandb package is not installed; install it with '
                      'pip install "breath[wandb]" (training continues without W&B)')


def _rename_leaf(name: str, names: Mapping[str, str]) -> str:
    """``batch/mean_gamma`` → ``batch/gamma_mean`` with ``WANDB_NAMES``."""
    prefix, _, leaf = name.rpartition("/")
    leaf = names.get(leaf, leaf)
    return f"{prefix}/{leaf}" if prefix else leaf


_OLD_NAMES = {key: name for name, key in WANDB_NAMES.items()}  # metrics.jsonl before one name per diagnostic


class MetricAccumulator:
    """Running statistics of device tensors, read to the host only when asked.

    ``add`` never synchronises with the device. Names whose last part starts with ``min_`` or
    ``max_`` keep the minimum or maximum, every other name the mean. Non-finite entries (a
    diagnostic over an empty set is NaN) are left out of the statistic.
    """

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}

    @staticmethod
    def _reduction(name: str) -> str:
        leaf = name.rpartition("/")[2]
        return "min" if leaf.startswith("min_") else "max" if leaf.startswith("max_") else "mean"

    @torch.no_grad()
    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            finite = torch.isfinite(value)
            reduction = self._reduction(name)
            if reduction == "mean":
                value = torch.where(finite, value, 0.0)
                combine = torch.add
            else:
                fill = math.inf if reduction == "min" else -math.inf
                value = torch.where(finite, value, fill)
                combine = torch.minimum if reduction == "min" else torch.maximum
            if name in self.values:
                self.values[name] = combine(self.values[name], value)
                self.counts[name] = self.counts[name] + finite
            else:
                self.values[name], self.counts[name] = value, finite.float()

    def __bool__(self) -> bool:
        return bool(self.values)

    @torch.no_grad()
    def read(self) -> dict[str, float | list[float]]:
        """The statistics as Python numbers (NaN where nothing finite was added): one host copy."""
        if not self.values:
            return {}
        results = []
        for name, value in self.values.items():
            count = self.counts[name]
            stat = value / count.clamp(min=1) if self._reduction(name) == "mean" else value
            results.append(torch.where(count > 0, stat, math.nan).flatten())
        flat = torch.cat(results).cpu().tolist()
        out: dict[str, float | list[float]] = {}
        offset = 0
        for name, value in self.values.items():
            size = value.numel()
            out[name] = flat[offset] if value.dim() == 0 else flat[offset:offset + size]
            offset += size
        return out

    def reset(self) -> None:
        self.values.clear()
        self.counts.clear()

    @torch.no_grad()
    def reduce(self, all_reduce: Callable[[torch.Tensor, str], None]) -> None:
        """Combine, in place, with the accumulators of the other processes of a data-parallel run.

        ``all_reduce(tensor, op)`` reduces a tensor over the processes with op "sum", "min" or
        "max"; every process must hold the same names in the same order (they add the same
        statistics at the same steps). Sums and counts add, minima and maxima combine: one
        collective per kind of statistic.
        """
        slots: dict[str, list[tuple[dict[str, torch.Tensor], str]]] = {"sum": [], "min": [], "max": []}
        for name in self.values:
            reduction = self._reduction(name)
            slots["sum" if reduction == "mean" else reduction].append((self.values, name))
        slots["sum"].extend((self.counts, name) for name in self.counts)
        for op, entries in slots.items():
            if entries:
                tensors = [store[name] for store, name in entries]
                flat = torch.cat([t.flatten() for t in tensors])
                all_reduce(flat, op)
                for (store, name), part in zip(entries, flat.split([t.numel() for t in tensors])):
                    store[name] = part.view_as(store[name])

    @torch.no_grad()
    def zero_(self) -> None:
        """Forget what was added but keep the names (which ``reduce`` needs alike on every
        process): sums and counts 0, minima +inf, maxima -inf. A resumed data-parallel run gives
        the saved statistics to rank 0 only, so that they are not counted once per rank."""
        fills = {"mean": 0.0, "min": math.inf, "max": -math.inf}
        self.values = {name: torch.full_like(v, fills[self._reduction(name)]) for name, v in self.values.items()}
        self.counts = {name: torch.zeros_like(c) for name, c in self.counts.items()}

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"values": {k: v.cpu() for k, v in self.values.items()},
                "counts": {k: v.cpu() for k, v in self.counts.items()}}

    def load_state_dict(self, state: Mapping[str, Mapping[str, torch.Tensor]], device: torch.device) -> None:
        self.values = {k: v.to(device) for k, v in state["values"].items()}
        self.counts = {k: v.to(device) for k, v in state["counts"].items()}


# --------------------------------------------------------------------------------------------- sinks


class JsonlLog:
    """``metrics.jsonl``: one JSON record per line, every line written whole and flushed.

    The file is append-only, so a kill can at most tear its last line, which ``read_jsonl`` skips.
    Opening it for a run first rewrites it (atomically) with only the records up to the step the
    run starts from, so a resumed run does not repeat steps and a fresh run starts empty.
    """

    def __init__(self, path: str | Path, keep_until_step: int = 0):
        self.path = Path(path)
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= keep_until_step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.path, lambda file: file.write(text.encode("utf-8")))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(json_safe(dict(record))) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Make what was written durable (at epoch ends and before a checkpoint)."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (empty when it does not exist; a torn line is skipped).
    Files of older versions, which logged the W&B names, read with the diagnostics' names."""
    records = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records.append({_rename_leaf(key, _OLD_NAMES): value for key, value in record.items()})
    return records


class WandbLog:
    """Weights & Biases logging; ``start`` returns None (after one line saying why) when W&B is
    unavailable, and training goes on without it."""

    def __init__(self, run: Any):
        self.run = run

    @classmethod
    def start(cls, project: str, name: str | None, config: Mapping[str, Any], directory: str | Path,
              run_id: str | None = None) -> "WandbLog | None":
        try:
            import wandb
        except ImportError:
            print(WANDB_INSTALL_HINT, file=sys.stderr)
            return None
        try:
            run = wandb.init(project=project, name=name, config=dict(config), dir=str(directory),
                             id=run_id, resume="allow" if run_id else None)
        except Exception as exc:  # wandb raises many types (no login, no network, bad project)
            print(f"--use-wandb: W&B could not start ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                  "run `wandb login` or set WANDB_MODE=offline (training continues without W&B)",
                  file=sys.stderr)
            return None
        return cls(run)

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, record: Mapping[str, Any], step: int) -> None:
        scalars = {_rename_leaf(k, WANDB_NAMES): v for k, v in record.items()
                   if isinstance(v, (int, float)) and k not in ("step",)}
        self.run.log(scalars, step=step)

    def finish(self) -> None:
        self.run.finish()


class MetricsLogger:
    """Sends every record to ``metrics.jsonl`` and, when enabled, to W&B."""

    def __init__(self, jsonl: JsonlLog, wandb: WandbLog | None = None):
        self.jsonl = jsonl
        self.wandb = wandb

    def log(self, record: Mapping[str, Any]) -> None:
        self.jsonl.write(record)
        if self.wandb is not None:
            self.wandb.log(record, step=int(record["step"]))

    def sync(self) -> None:
        self.jsonl.sync()

    def close(self) -> None:
        self.jsonl.close()
        if self.wandb is not None:
            self.wandb.finish()


# ------------------------------------------------------------------------------------------- console


class ProgressBar:
    """A tqdm bar per epoch (on stderr) whose postfix shows loss, lr, tokens/s, Γ and SNR."""

    def __init__(self, total: int, initial: int, description: str, enabled: bool = True):
        self.bar = tqdm(total=total, initial=initial, desc=description, unit="batch",
                        dynamic_ncols=True, leave=True, file=sys.stderr, disable=not enabled)

    def advance(self) -> None:
        self.bar.update(1)

    def show(self, record: Mapping[str, Any]) -> None:
        postfix = {"loss": _fmt(record.get("batch/loss"), ".4f"), "lr": _fmt(record.get("batch/lr"), ".2e"),
                   "tok/s": _fmt(record.get("batch/tokens_per_sec"), ".0f")}
        if "batch/mean_gamma" in record:
            postfix["Γ"] = _fmt(record["batch/mean_gamma"], ".4f")
        if "batch/mean_snr" in record:
            postfix["SNR"] = _fmt(record["batch/mean_snr"], ".2f")
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def format_epoch_summary(record: Mapping[str, Any], num_epochs: int, best_val_loss: float) -> str:
    """The seed's epoch summary: losses, time and memory, then one line per mechanism."""
    r = record.get
    vram = r("epoch/peak_vram_mb")
    lines = [
        f"Epoch {r('epoch')}/{num_epochs}  time {r('epoch/time_s'):.1f} s  "
        f"peak VRAM {'n/a (CPU)' if vram is None else f'{vram:.0f} MiB'}",
        f"  Loss          train {_fmt(r('train/loss'), '.4f')} (ppl {_fmt(r('train/perplexity'), '.2f')})"
        f"   val {_fmt(r('val/loss'), '.4f')} (ppl {_fmt(r('val/perplexity'), '.2f')})"
        f"   best val {_fmt(best_val_loss, '.4f')}",
    ]
    sections = (
        ("Γ forgetting", (("mean", "mean_gamma", ".4f"), ("std", "std_gamma", ".4f"),
                          ("min", "min_gamma", ".4f"), ("max", "max_gamma", ".4f"),
                          ("effective", "mean_effective_gamma", ".4f"))),
        ("SNR", (("mean", "mean_snr", ".3f"), ("low-SNR ratio", "low_snr_ratio", ".3f"))),
        ("Resonance", (("modes", "num_resonant_modes", ".2f"), ("energy", "total_resonance_energy", ".4g"))),
        ("Stability", (("Lyapunov stable ratio", "lyapunov_stable_ratio", ".3f"),
                       ("fast-weight energy", "mean_fast_weight_energy", ".4g"))),
    )
    for title, fields in sections:
        if any(f"train/{key}" in record for _, key, _ in fields):
            parts = "   ".join(f"{label} {_fmt(r(f'train/{key}'), spec)}" for label, key, spec in fields)
            lines.append(f"  {title:<14}{parts}")
    return "\n".join(lines)


def diagnostics_by_name(diagnostics: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Flatten a model's diagnostics dict: ``per_layer`` entries become ``per_layer/<name>``."""
    flat: dict[str, torch.Tensor] = {}
    for name, value in diagnostics.items():
        if name == "per_layer":
            flat.update({f"per_layer/{k}": v for k, v in value.items()})
        elif isinstance(value, torch.Tensor):
            flat[name] = value
    return flat


def prefixed(stats: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"mean_gamma": x}`` → ``{"batch/mean_gamma": x}``."""
    return {f"{prefix}/{k}": v for k, v in stats.items()}
