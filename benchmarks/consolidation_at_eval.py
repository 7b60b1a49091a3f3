"""What each consolidation mechanism does inside a trained phase2 model (issue 16).

For every run directory given, the validation loss of its ``best_model.pt`` with the consolidation
as trained, then with one mechanism switched off at evaluation time (the weights unchanged):

    no-eta-boost       eta_boost 1            (the SNR filter's η × 1.5 after a high-SNR boundary)
    no-gamma-boost     gamma_boost 1          (the SNR filter's Γ × 2 after a low-SNR boundary)
    no-snr             both                   (lm_compare's ``no-snr``)
    no-resonance       resonance_threshold 0  (every zeta mode kept)
    no-lyapunov        lyapunov_gamma_step 0
    no-consolidation   all of the above

and how often each was set on the same windows (a boost set at a window's last boundary acts on
nothing), from the model's diagnostics (DESIGN §6): the
η boost after every boundary whose SNR is above the threshold (``1 − low_snr_ratio``; an SNR exactly
at it fires neither), the Γ boost after ``low_snr_ratio`` of them, the Lyapunov step after
``1 − lyapunov_stable_ratio``, and the resonance projection removes ``d − num_resonant_modes``
modes holding ``1 − total_resonance_energy / mean_fast_weight_energy`` of the memory's energy.

This measures what a mechanism does in a model trained with it, not what it earns in training
(``study.py``'s ablations retrain without it); a mechanism that changes the loss by nothing here
and rarely fires cannot have shaped the trained weights much either. Loss in fp32, the run's window
and batch size, the whole validation split unless ``--num-batches``.

    PYTHONPATH=src python benchmarks/consolidation_at_eval.py RUN_DIR [RUN_DIR ...] --output out.json
    PYTHONPATH=src python benchmarks/consolidation_at_eval.py --report a.json b.json --output merged.json

Writes the JSON (date, device, command, commit, every run's losses and diagnostics) and a ``.md``
of the two tables beside it; ``--report`` merges earlier JSONs (their runs and records) instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.provenance import run_record  # noqa: E402
from breath.data.windows import WindowDataset  # noqa: E402
from breath.evaluate import evaluate, split_tokens  # noqa: E402
from breath.runs import load_run  # noqa: E402
from benchmarks.lm_compare import device_name  # noqa: E402

OFF = {"eta_boost": 1.0, "gamma_boost": 1.0, "resonance_threshold": 0.0, "lyapunov_gamma_step": 0.0}
SETTINGS = {
    "as trained": {},
    "no-eta-boost": {"eta_boost": 1.0},
    "no-gamma-boost": {"gamma_boost": 1.0},
    "no-snr": {"eta_boost": 1.0, "gamma_boost": 1.0},
    "no-resonance": {"resonance_threshold": 0.0},
    "no-lyapunov": {"lyapunov_gamma_step": 0.0},
    "no-consolidation": OFF,
}
DIAGNOSTICS = ("mean_snr", "low_snr_ratio", "num_resonant_modes", "total_resonance_energy",
               "lyapunov_stable_ratio", "mean_fast_weight_energy", "mean_gamma", "mean_effective_gamma")


class Recorder(torch.nn.Module):
    """The model as ``breath.evaluate`` calls it, summing each batch's diagnostics (window-weighted) on
    the device: read once, at the end."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.sums, self.windows = model, {}, 0

    def forward(self, input_ids: torch.Tensor):
        out = self.model(input_ids, return_diagnostics=True)
        for name in DIAGNOSTICS:
            self.sums[name] = self.sums.get(name, 0.0) + out.diagnostics[name].double() * len(input_ids)
        self.windows += len(input_ids)
        return out

    def means(self) -> dict[str, float]:
        return {name: total.item() / self.windows for name, total in self.sums.items()}


def firing(d: dict[str, float], head_dim: int) -> dict[str, float]:
    """How often each mechanism acted, from the diagnostics (module docstring)."""
    return {"eta_boost_rate": 1 - d["low_snr_ratio"], "gamma_boost_rate": d["low_snr_ratio"],
            "lyapunov_step_rate": 1 - d["lyapunov_stable_ratio"],
            "modes_removed": head_dim - d["num_resonant_modes"],
            "energy_removed": 1 - d["total_resonance_energy"] / d["mean_fast_weight_energy"]}


def evaluate_run(run: Path, split: str, num_batches: int | None, device: torch.device) -> dict:
    row = {"run": str(run), "settings": {}}
    tokens = None
    for name, overrides in SETTINGS.items():
        loaded = load_run(run, overrides=overrides)
        cfg = loaded.model.cfg
        if cfg.arch != "phase2":
            raise SystemExit(f"{run}: arch {cfg.arch!r}; allowed: phase2 runs (the others have no consolidation)")
        if not cfg.consolidation:
            raise SystemExit(f"{run}: trained with --no-consolidation; allowed: phase2 runs with the consolidation")
        if tokens is None:
            train = loaded.train_options
            tokens, _ = split_tokens(loaded, train["dataset"], split, train["cache_dir"])
            row.update(dataset=train["dataset"], seed=train["seed"], n_seq=cfg.n_seq, batch_size=train["batch_size"],
                       config={k: getattr(cfg, k) for k in (*OFF, "snr_threshold", "base_decay", "head_dim")})
        recorder = Recorder(loaded.model.to(device))
        result = evaluate(recorder, WindowDataset(tokens, cfg.n_seq), train["batch_size"], num_batches)
        loss, windows = result.loss, result.windows
        diagnostics = recorder.means()
        row["settings"][name] = {"loss": loss, "windows": windows, "config": {k: getattr(cfg, k) for k in OFF},
                                 "diagnostics": diagnostics, "firing": firing(diagnostics, cfg.head_dim)}
        print(f"{run} {name}: val loss {loss:.5f} ({windows} windows)", flush=True)
    return row


def summary(rows: list[dict]) -> str:
    """Markdown: Δ loss of each setting against 'as trained' (mean ± std over runs), then firing rates."""
    def pm(values: list[float], spec: str) -> str:
        spread = f" ± {statistics.stdev(values):{spec.lstrip('+')}}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):{spec}}{spread}"

    lines = ["| switched off at evaluation | n | Δ val loss (mean ± std over runs) | largest abs Δ |",
             "| --- | ---: | ---: | ---: |"]
    for name in list(SETTINGS)[1:]:
        deltas = [r["settings"][name]["loss"] - r["settings"]["as trained"]["loss"] for r in rows]
        lines.append(f"| {name} | {len(deltas)} | {pm(deltas, '+.5f')} | {max(map(abs, deltas)):.5f} |")
    lines += ["", "| as trained | n | η boost fired | Γ boost fired | Lyapunov step fired | modes removed (of d) "
              "| energy removed | mean SNR |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    fire = [r["settings"]["as trained"]["firing"] for r in rows]
    snr = [r["settings"]["as trained"]["diagnostics"]["mean_snr"] for r in rows]
    lines.append(f"| val loss {pm([r['settings']['as trained']['loss'] for r in rows], '.4f')} | {len(rows)} | "
                 f"{pm([f['eta_boost_rate'] for f in fire], '.2%')} | {pm([f['gamma_boost_rate'] for f in fire], '.2%')} | "
                 f"{pm([f['lyapunov_step_rate'] for f in fire], '.2%')} | {pm([f['modes_removed'] for f in fire], '.1f')} | "
                 f"{pm([f['energy_removed'] for f in fire], '.2%')} | {pm(snr, '.2f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="phase2 run directories (breath train --output-dir)")
    parser.add_argument("--split", default="val", choices=("val", "test"), help="(default: val)")
    parser.add_argument("--num-batches", type=int, help="the first N batches only (default: the whole split)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, required=True, help="JSON (and a .md of the tables beside it)")
    parser.add_argument("--report", nargs="+", type=Path, metavar="JSON",
                        help="merge these earlier outputs into --output (no evaluation)")
    args = parser.parse_args(argv)
    if bool(args.report) == bool(args.runs):
        parser.error("give RUN_DIR ... (evaluate) or --report JSON ... (merge), one of the two")
    if args.report:
        sources = [json.loads(path.read_text()) for path in args.report]
        record = {"merged": [{k: v for k, v in source.items() if k != "runs"} | {"file": str(path)}
                             for path, source in zip(args.report, sources)],
                  "runs": [row for source in sources for row in source["runs"]]}
    else:
        started = time.perf_counter()
        rows = [evaluate_run(run, args.split, args.num_batches, torch.device(args.device)) for run in args.runs]
        record = {**run_record(None if argv is None else ["benchmarks/consolidation_at_eval.py", *argv]),
                  "device": device_name(args.device), "torch": torch.__version__, "split": args.split,
                  "wall_s": round(time.perf_counter() - started, 1), "runs": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    table = summary(record["runs"])
    args.output.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
