"""Phase 2 vs Phase 1 vs Transformer (and ablations of Phase 2) as language models, at equal budgets.

Every model goes through the real command line, as a user would run it:

1. ``scripts/train_phase2.py`` trains it: the same preset, batch size, window and number of
   optimizer steps for every model (so the same number of training tokens), validated after every
   epoch; ``best_model.pt`` is the epoch with the lowest validation loss (early stopping by selection);
2. ``breath eval --split test`` measures that checkpoint on the test split;
3. ``breath generate --temperature 0`` writes a short greedy sample from a fixed prompt.

The full-resolvent ablation (``--resolvent full``: each output sees the whole window, future tokens
included) is also evaluated with ``breath eval --resolvent causal``: the same weights read causally,
as they must be at generation time. Its gap to the full-resolvent test loss is what the model
gained by reading the future; its greedy sample shows what is left without it.

Ablations of phase2: ``no-snr`` (--gamma-boost 1 --eta-boost 1), ``no-resonance``
(--resonance-threshold 0), ``no-lyapunov`` (--lyapunov-gamma-step 0), ``full-resolvent``,
``no-conv`` (--memory-conv 0: the memory writes each token's own key and value, as DESIGN §5 and
the seed do), and one alternative, ``key-shift`` (no convolution; the previous token's key).

    python benchmarks/lm_compare.py                                  # small preset, shakespeare, all models
    python benchmarks/lm_compare.py --datasets shakespeare,brown --max-steps 600 --num-epochs 4
    python benchmarks/lm_compare.py --archs phase2,transformer --ablations none --batch-size 32
    python benchmarks/lm_compare.py --report a/lm_compare.json b/lm_compare.json   # tables of earlier runs

Prints one table; writes ``lm_compare.json`` (every number, the settings, device, date, git commit
and the command) and ``lm_compare.md`` (the table, for QUALITY.md) into ``--output-dir``, after every
run (so a run cut short keeps what was done). Each run's directory keeps its ``commands.log``.
``--report`` runs nothing: it prints the markdown of each given ``lm_compare.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

from breath.models.config import PRESETS
from breath.train.metrics import read_jsonl

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.provenance import git_commit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("phase1", "phase2", "transformer")
ABLATIONS = {
    "no-snr": ["--gamma-boost", "1", "--eta-boost", "1"],
    "no-resonance": ["--resonance-threshold", "0"],
    "no-lyapunov": ["--lyapunov-gamma-step", "0"],
    "full-resolvent": ["--resolvent", "full"],
    "no-conv": ["--memory-conv", "0"],
    "key-shift": ["--memory-conv", "0", "--memory-key-shift"],
}
PROMPT = "ROMEO:"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=tuple(PRESETS))
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated (default: all three)")
    parser.add_argument("--ablations", default=",".join(ABLATIONS),
                        help=f"phase2 ablations, comma-separated, or 'none' (default: {','.join(ABLATIONS)})")
    parser.add_argument("--datasets", default="shakespeare", help="comma-separated (e.g. shakespeare,brown)")
    parser.add_argument("--max-steps", type=int, default=300, help="optimizer steps per model (default: 300)")
    parser.add_argument("--num-epochs", type=int, default=3,
                        help="the steps are split into this many epochs, each ending with validation (default: 3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-seq", type=int, help="training window (default: the preset's)")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="peak learning rate for every model")
    parser.add_argument("--val-batches", type=int, default=16, help="validation batches per epoch (default: 16)")
    parser.add_argument("--test-batches", type=int, help="test batches to evaluate (default: the whole split)")
    parser.add_argument("--sample-tokens", type=int, default=48, help="greedy sample length; 0: no samples")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", help="passed to every command (default: theirs, cuda when available)")
    parser.add_argument("--train-args", default="", help='extra flags for every training run, e.g. "--vocab-size 8000"')
    parser.add_argument("--output-dir", type=Path, default=REPO / "benchmarks" / "results" / "lm_compare")
    parser.add_argument("--report", nargs="+", type=Path, metavar="JSON",
                        help="run nothing: print the markdown of these lm_compare.json files of earlier runs")
    args = parser.parse_args(argv)
    args.archs = [a for a in args.archs.split(",") if a]
    args.ablations = [] if args.ablations == "none" else [a for a in args.ablations.split(",") if a]
    args.datasets = [d for d in args.datasets.split(",") if d]
    for arch in args.archs:
        if arch not in ARCHS:
            parser.error(f"--archs: unknown {arch!r}; allowed: {', '.join(ARCHS)}")
    for ablation in args.ablations:
        if ablation not in ABLATIONS:
            parser.error(f"--ablations: unknown {ablation!r}; allowed: {', '.join(ABLATIONS)} or none")
    if args.max_steps < args.num_epochs or args.num_epochs < 1:
        parser.error(f"--max-steps {args.max_steps} must be at least --num-epochs {args.num_epochs} (>= 1)")
    return args


def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    """Model name → its training flags."""
    models = {arch: ["--arch", arch] for arch in args.archs}
    models.update({f"phase2 {name}": ["--arch", "phase2", *ABLATIONS[name]] for name in args.ablations})
    return models


def run_command(command: list[str], log: Path) -> tuple[int, str]:
    """Run ``command`` in the repository; append its output to ``log``; (exit code, stdout)."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    with log.open("a", encoding="utf-8") as file:
        file.write(f"$ {shlex.join(command)}\n{result.stdout}{result.stderr}"
                   f"[exit {result.returncode} after {time.perf_counter() - started:.1f} s]\n\n")
    return result.returncode, result.stdout


def train_summary(run_dir: Path, batch_size: int, n_seq: int) -> dict:
    """What the run's own files say: best validation loss, tokens, throughput, memory, mechanisms."""
    history = json.loads((run_dir / "training_history.json").read_text())
    records = read_jsonl(run_dir / "metrics.jsonl")
    epochs = [r for r in records if "train/loss" in r]
    steps = max(r["step"] for r in records)
    train_time = sum(r["epoch/time_s"] for r in epochs)
    vram = [r["epoch/peak_vram_mb"] for r in epochs if r.get("epoch/peak_vram_mb") is not None]
    last = epochs[-1]
    return {
        "steps": steps,
        "train_tokens": steps * batch_size * n_seq,
        "best_val_loss": history["best_val_loss"],
        "best_val_ppl": math.exp(history["best_val_loss"]),
        "val_losses": history["val_losses"],
        "train_time_s": train_time,
        "tokens_per_sec": steps * batch_size * n_seq / train_time,
        "peak_vram_mb": max(vram) if vram else None,
        "mean_gamma": last.get("train/mean_gamma"),
        "lyapunov_stable_ratio": last.get("train/lyapunov_stable_ratio"),
    }


def benchmark_model(args: argparse.Namespace, dataset: str, name: str, flags: list[str], n_seq: int) -> dict:
    """Train, evaluate and sample one model; a failed step is recorded, not raised."""
    run_dir = args.output_dir / "runs" / dataset / name.replace(" ", "-")
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "commands.log"
    log.write_text("")
    device = ["--device", args.device] if args.device else []
    steps_per_epoch = args.max_steps // args.num_epochs
    train = [sys.executable, "scripts/train_phase2.py", "--preset", args.preset, *flags, "--dataset", dataset,
             "--batch-size", str(args.batch_size), "--n-seq", str(n_seq), "--learning-rate", str(args.learning_rate),
             "--num-epochs", str(args.num_epochs), "--num-train-batches", str(steps_per_epoch),
             "--num-val-batches", str(args.val_batches), "--save-every", str(args.num_epochs),
             "--seed", str(args.seed), "--output-dir", str(run_dir), *device, *shlex.split(args.train_args)]
    row = {"dataset": dataset, "model": name, "run_dir": str(run_dir), "train_command": shlex.join(train)}
    started = time.perf_counter()
    code, _ = run_command(train, log)
    if code != 0:
        return {**row, "error": f"training exited with {code}; see {log}"}
    row.update(train_summary(run_dir, args.batch_size, n_seq))

    test_batches = ["--num-batches", str(args.test_batches)] if args.test_batches else []
    evaluations = {"test": []}
    if "--resolvent" in flags and flags[flags.index("--resolvent") + 1] == "full":
        evaluations["causal_test"] = ["--resolvent", "causal"]
    if getattr(args, "eval_stride", None):  # study.py's --eval-stride: sliding windows too
        evaluations["strided_test"] = ["--stride", str(args.eval_stride)]
    for key, extra in evaluations.items():
        output = run_dir / f"eval_{key}.json"
        code, _ = run_command([sys.executable, "-m", "breath", "eval", str(run_dir), "--split", "test",
                               "--output", str(output), *test_batches, *device, *extra], log)
        if code != 0:
            return {**row, "error": f"breath eval exited with {code}; see {log}"}
        result = json.loads(output.read_text())
        row.update({f"{key}_loss": result["loss"], f"{key}_ppl": result["perplexity"]})
        row.setdefault("parameters", result["parameters"])

    if args.sample_tokens:
        code, text = run_command([sys.executable, "-m", "breath", "generate", str(run_dir), "--prompt", PROMPT,
                                  "--temperature", "0", "--max-new-tokens", str(args.sample_tokens), *device], log)
        row["sample"] = text.rstrip("\n") if code == 0 else f"(breath generate exited with {code}; see {log})"
    row["wall_s"] = time.perf_counter() - started
    return row


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


# Row keys as results written before 2026-12-04 (one name per diagnostic) spelled them.
OLD_ROW_KEYS = {"mean_gamma": "gamma_mean", "lyapunov_stable_ratio": "stability_ratio"}


def diagnostic(row: dict, name: str):
    """A diagnostic of a result row, under its name or its name of before 2026-12-04."""
    return row.get(name, row.get(OLD_ROW_KEYS[name]))


def table(rows: list[dict]) -> list[str]:
    """The markdown table: one line per model."""
    lines = ["| dataset | model | params | train tokens | best val loss | best val ppl | test ppl | "
             "causal test ppl | tokens/s | peak VRAM MiB | Γ mean | stable ratio |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['model']} | {r['error']} |" + " |" * 9)
            continue
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['parameters'] / 1e6:.2f}M | {r['train_tokens']:,} | "
            f"{r['best_val_loss']:.4f} | {r['best_val_ppl']:.1f} | {fmt(r.get('test_ppl'), '.1f')} | "
            f"{fmt(r.get('causal_test_ppl'), '.1f')} | {r['tokens_per_sec']:,.0f} | {fmt(r['peak_vram_mb'], '.0f')} | "
            f"{fmt(diagnostic(r, 'mean_gamma'), '.4f')} | {fmt(diagnostic(r, 'lyapunov_stable_ratio'), '.3f')} |")
    return lines


def device_name(requested: str | None) -> str:
    import torch  # only for the name of the device the runs used

    if requested != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def markdown(report: dict) -> str:
    """One run's markdown (the content of its ``lm_compare.md``) from its ``lm_compare.json``."""
    settings, rows = report["settings"], report["rows"]
    commit = report.get("git_commit", "not recorded") + (" (dirty tree)" if report.get("git_dirty") else "")
    steps, n_seq, batch = report["steps"], report["n_seq"], settings["batch_size"]
    header = [f"{report['date']}, {report['device']}, commit {commit}: `{report['command']}`", "",
              f"preset {settings['preset']}, batch {batch} × window {n_seq}, at most {steps} steps "
              f"({steps * batch * n_seq:,} tokens) per model (an epoch stops early when "
              f"the split holds fewer batches: 'train tokens' is what ran), learning rate "
              f"{settings['learning_rate']:g}; best val = the best of {settings['num_epochs']} epoch-end validations "
              f"({settings['val_batches']} batches each); test = "
              + (f"the first {settings['test_batches']} batches of the test split." if settings["test_batches"]
                 else "the whole test split."), ""]
    samples = [f"- **{r['dataset']} / {r['model']}**: {r['sample']!r}" for r in rows if r.get("sample")]
    if samples:
        samples = ["", f"Greedy samples (prompt {PROMPT!r}):", "", *samples]
    return "\n".join(header + table(rows) + samples) + "\n"


def write_report(output_dir: Path, report: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "lm_compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (output_dir / "lm_compare.md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        print("\n".join(markdown(json.loads(path.read_text())) for path in args.report), end="")
        return
    n_seq = args.n_seq or PRESETS[args.preset]["n_seq"]
    steps = args.max_steps // args.num_epochs * args.num_epochs
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
            "device": device_name(args.device), "command": shlex.join(["python", sys.argv[0], *(argv or sys.argv[1:])]),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "n_seq": n_seq, "steps": steps, **git_commit()}
    models = variants(args)
    rows: list[dict] = []
    started = time.perf_counter()
    for dataset in args.datasets:
        for name, flags in models.items():
            elapsed = time.perf_counter() - started
            print(f"[{elapsed:6.0f} s] {dataset} / {name}: training {steps} steps ...", flush=True)
            row = benchmark_model(args, dataset, name, flags, n_seq)
            rows.append(row)
            write_report(args.output_dir, {**meta, "rows": rows})
            done = row.get("error") or (f"best val {row['best_val_loss']:.4f}, test ppl {row['test_ppl']:.1f}, "
                                        f"{row['tokens_per_sec']:,.0f} tokens/s")
            print(f"[{time.perf_counter() - started:6.0f} s] {dataset} / {name}: {done}", flush=True)
    print("\n".join(["", *table(rows), "", f"wrote {args.output_dir / 'lm_compare.json'} and "
                     f"{args.output_dir / 'lm_compare.md'}"]))


if __name__ == "__main__":
    main()
