"""PNG plots of a run, drawn from its ``metrics.jsonl`` records.

``loss_curves.png``: batch loss per logged step, train/val loss per epoch (and at ``--eval-every``
points), learning rate. ``diagnostics.png``: Γ (mean with its min–max band, and the effective Γ the
memory applied), SNR and the low-SNR
ratio, resonant modes and their energy, Lyapunov stable ratio and fast-weight energy; written
only when the model reports diagnostics. ``breath eval`` adds the loss by position in the window
(``plot_position_loss``). Figures are rendered on matplotlib's Agg canvas directly,
so no display is needed and the global pyplot backend is left alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from breath.io import atomic_write

# (title, left series, right series or None); series are keys of the step records
DIAGNOSTIC_PANELS = (
    ("Γ (forgetting rate)", "batch/mean_gamma", None),
    ("SNR", "batch/mean_snr", "batch/low_snr_ratio"),
    ("Memory resonance", "batch/num_resonant_modes", "batch/total_resonance_energy"),
    ("Stability", "batch/lyapunov_stable_ratio", "batch/mean_fast_weight_energy"),
)


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records
              if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))


def plot_losses(records: Sequence[dict[str, Any]], path: Path) -> None:
    figure = Figure(figsize=(11, 4))
    loss_ax, lr_ax = figure.subplots(1, 2)
    loss_ax.plot(*_series(records, "batch/loss"), lw=0.8, alpha=0.6, label="batch loss")
    epochs = [r for r in records if "train/loss" in r]
    loss_ax.plot(*_series(epochs, "train/loss"), "o-", label="train loss (epoch)")
    loss_ax.plot(*_series(records, "val/loss"), "s-", label="val loss")
    loss_ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", title="Loss")
    loss_ax.legend()
    lr_ax.plot(*_series(records, "batch/lr"))
    lr_ax.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    _save(figure, path)


def plot_diagnostics(records: Sequence[dict[str, Any]], path: Path) -> bool:
    """Draw the mechanism panels; False (nothing written) when no record has a diagnostic."""
    if not any(_series(records, left)[0] for _, left, _ in DIAGNOSTIC_PANELS):
        return False
    figure = Figure(figsize=(11, 7))
    for ax, (title, left, right) in zip(figure.subplots(2, 2).flat, DIAGNOSTIC_PANELS):
        ax.plot(*_series(records, left), color="tab:blue")
        ax.set(title=title, xlabel="step")
        ax.set_ylabel(left.split("/")[1], color="tab:blue")
        if left == "batch/mean_gamma":
            steps, low = _series(records, "batch/min_gamma")
            _, high = _series(records, "batch/max_gamma")
            if steps and len(low) == len(high):
                ax.fill_between(steps, low, high, alpha=0.2, color="tab:blue", label="min–max")
            effective = _series(records, "batch/mean_effective_gamma")
            if effective[0]:
                ax.plot(*effective, color="tab:green", label="effective (memory)")
            if steps or effective[0]:
                ax.legend()
        if right is not None:
            twin = ax.twinx()
            twin.plot(*_series(records, right), color="tab:orange")
            twin.set_ylabel(right.split("/")[1], color="tab:orange")
    _save(figure, path)
    return True


def write_plots(output_dir: str | Path, records: Sequence[dict[str, Any]]) -> list[Path]:
    """Write the run's PNGs into ``output_dir``; returns the paths written."""
    output_dir = Path(output_dir)
    written = [output_dir / "loss_curves.png"]
    plot_losses(records, written[0])
    if plot_diagnostics(records, output_dir / "diagnostics.png"):
        written.append(output_dir / "diagnostics.png")
    return written


def plot_position_loss(position_loss: Sequence[float], bands: Sequence[tuple[int, int, float]], path: Path,
                       title: str, train_n_seq: int | None = None) -> None:
    """Mean loss at each position of the evaluation windows (does loss keep falling with context?),
    with ``bands`` ``(first, last, mean)`` of positions drawn as steps over the noisy per-position line."""
    figure = Figure(figsize=(8, 4.5))
    ax = figure.subplots()
    ax.plot(range(1, len(position_loss) + 1), position_loss, lw=0.8, alpha=0.5, label="mean loss at the position")
    for i, (first, last, mean) in enumerate(bands):
        ax.hlines(mean, first, last + 1, colors="tab:orange", lw=2, label="mean over the band" if i == 0 else None)
    if train_n_seq is not None and train_n_seq < len(position_loss):
        ax.axvline(train_n_seq, color="gray", ls="--", lw=1, label=f"training window ({train_n_seq})")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="position in the window (= tokens of context seen)", ylabel="cross-entropy (nats/token)",
           title=title)
    ax.legend()
    _save(figure, path)
