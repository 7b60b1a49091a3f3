"""Bounded Γ (``--max-gamma``) against the unbounded default, and what the Lyapunov monitor reads.

Trains the same model with each ``--max-gamma`` value and seed through ``breath train`` (so the run
is what a user gets), then reads each run's best validation loss and last-epoch diagnostics from its
own files. Then, on the first validation windows, the stable ratio and the effective Γ of every
trained model and of freshly initialised models at several ``--base-decay`` values (the seed's
"below 90%, raise --base-decay"). Prints one JSON document; the defaults are the CPU run recorded in
``benchmarks/results/max_gamma_cpu.json`` (about 4 minutes per training on a shared 2-core CPU).

    python benchmarks/max_gamma.py > benchmarks/results/max_gamma_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from breath import ModelConfig, build_model
from breath.data.windows import prepare_data
from breath.train.checkpoint import load_model
from breath.train.metrics import read_jsonl

DIAGNOSTICS = ("mean_gamma", "max_gamma", "mean_effective_gamma", "lyapunov_stable_ratio", "mean_snr")


def train(flags: list[str], output_dir: Path) -> dict:
    command = [sys.executable, "-m", "breath", "train", *flags, "--output-dir", str(output_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    history = json.loads((output_dir / "training_history.json").read_text())
    last = [r for r in read_jsonl(output_dir / "metrics.jsonl") if "train/loss" in r][-1]
    return {"command": "python " + shlex.join(command[1:]), "best_val_loss": history["best_val_loss"],
            **{f"train/{name}": last.get(f"train/{name}") for name in DIAGNOSTICS}}


@torch.no_grad()
def read_diagnostics(model: torch.nn.Module, ids: torch.Tensor) -> dict:
    diagnostics = model.eval()(ids, return_diagnostics=True).diagnostics
    return {name: float(diagnostics[name]) for name in DIAGNOSTICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-gammas", type=float, nargs="+", default=[0.0, 0.1], help="0: unbounded")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--flags", default="--preset small --dataset shakespeare --device cpu --n-seq 128 "
                        "--batch-size 4 --num-epochs 1 --num-train-batches 160 --num-val-batches 40 "
                        "--learning-rate 1e-3 --log-every 10", help="breath train flags shared by every run")
    parser.add_argument("--base-decays", type=float, nargs="+", default=[0.001, 0.002, 0.004, 0.006, 0.01])
    parser.add_argument("--windows", type=int, default=8, help="validation windows of 512 tokens to read")
    args = parser.parse_args()

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    ids = prepare_data("shakespeare", 10000, 512).val[: args.windows * 512].view(args.windows, 512).long()
    runs, at_init = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for max_gamma in args.max_gammas:
                out = Path(tmp) / f"max_gamma_{max_gamma}_seed_{seed}"
                run = {"max_gamma": max_gamma or None, "seed": seed,
                       **train([*args.flags.split(), "--seed", str(seed), "--max-gamma", str(max_gamma)], out)}
                model, _ = load_model(out / "best_model.pt")
                run["val_windows"] = read_diagnostics(model, ids)
                runs.append(run)
                print(json.dumps(run), file=sys.stderr)
    for base_decay in args.base_decays:
        torch.manual_seed(0)
        model = build_model(ModelConfig.preset("small", vocab_size=10000, base_decay=base_decay))
        at_init.append({"base_decay": base_decay, **read_diagnostics(model, ids)})
    print(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": "CPU", "commit": commit, "command": "python " + shlex.join(sys.argv), "flags": args.flags,
        "val_windows": f"the first {args.windows} windows of 512 tokens of the Shakespeare validation split",
        "runs": runs, "at_init_by_base_decay": at_init,
    }, indent=1))


if __name__ == "__main__":
    main()
