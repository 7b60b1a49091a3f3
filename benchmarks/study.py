"""The quality study (issue 16): every variant × seed through the real CLI, aggregated as mean ± std.

Each run is ``lm_compare.benchmark_model`` (``scripts/train_phase2.py``, then ``breath eval --split
test`` once, on the run's ``best_model.pt``), one seed at a time. Variants:

- ``phase2``, ``transformer`` (at the base preset within 1% of phase2's parameters), ``phase1``;
- ``phase1-matched``: phase1 with ``--ffn-dim`` widened so its parameter count is phase2's ± 2%
  (``matched_ffn_dim``; both counts are printed);
- phase2 ablations ``no-snr``, ``no-resonance``, ``no-lyapunov``, ``no-conv`` (lm_compare's flags)
  and ``no-consolidation`` (``--no-consolidation``: the three consolidation mechanisms off together;
  the same function as the three ablations' flags at once, which the CPU study of 2026-12-08 ran,
  and faster: its kernels skip the consolidation).

``no-memory`` is the ``phase1`` row: the phase1 block is phase2's with the memory branch removed and
the BK resolvent Hermitian (no −iΓ, which only the memory's consolidation drives). A ``no-bk``
ablation (memory without the BK branch) has no option in ModelConfig and is not run.

Budgets: ``--token-budget N`` trains every run on N tokens (steps = N / (batch × window), split over
``--num-epochs`` validations); ``--until-converged`` trains whole epochs until validation has not
improved for ``--patience`` epochs (``--num-epochs`` is the cap), as ``--early-stopping-patience``.

Resumable: each run writes ``result.json`` (its numbers, the commands, date, device, torch version,
git commit and dirty flag) in its directory; a run whose ``result.json`` holds no error is skipped.
``--stop-after S`` starts no new run after S seconds, so a command fits a time limit.

    python benchmarks/study.py --dataset ptb --until-converged --seeds 0,1,2 --preset base
    python benchmarks/study.py --dataset english --token-budget 30000000 --variants phase2,transformer
    python benchmarks/study.py --report benchmarks/results/study/ptb/*/*/result.json

Writes ``study.json`` (every run's numbers and the aggregates) and ``study.md`` (the tables, for
QUALITY.md) into ``--output-dir``; ``--report FILES`` rebuilds both from ``result.json`` files alone.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_compare  # noqa: E402  (the run, the command log, the device name)
from lm_compare import ABLATIONS, REPO  # noqa: E402
from benchmarks.provenance import git_commit  # noqa: E402

from breath.models.config import PRESETS  # noqa: E402

CONSOLIDATION = ("no-snr", "no-resonance", "no-lyapunov")
VARIANTS: dict[str, list[str]] = {
    "phase2": ["--arch", "phase2"],
    "transformer": ["--arch", "transformer"],
    "phase1": ["--arch", "phase1"],
    "phase1-matched": ["--arch", "phase1"],  # + --ffn-dim, computed for the preset and vocabulary
    **{name: ["--arch", "phase2", *ABLATIONS[name]] for name in (*CONSOLIDATION, "no-conv")},
    "no-consolidation": ["--arch", "phase2", "--no-consolidation"],
}
ABLATION_NAMES = (*CONSOLIDATION, "no-consolidation", "no-conv")
RATIOS = (("phase2", "transformer"), ("phase2", "phase1-matched"), ("phase2", "phase1"))
METRICS = ("best_val_loss", "best_val_ppl", "test_loss", "test_ppl", "word_ppl", "strided_word_ppl", "train_tokens",
           "train_time_s", "wall_s", "parameters")


# ------------------------------------------------------------------------------------ parameters


def count_parameters(preset: str, vocab_size: int, **overrides) -> int:
    """The parameter count of a preset's model, built on the meta device (no memory, no init)."""
    import torch

    from breath.models import ModelConfig, build_model

    with torch.device("meta"):
        return build_model(ModelConfig.preset(preset, vocab_size=vocab_size, **overrides)).num_parameters()


def matched_ffn_dim(preset: str, vocab_size: int, arch: str = "phase1", target: str = "phase2",
                    multiple: int = 64) -> tuple[int, int, int]:
    """(ffn_dim, its parameter count, the target's): the ``arch`` model whose count is closest to
    ``target``'s. The count is affine in ffn_dim (each layer's FFN holds 2·d·f + f + d), so two
    counts give the slope; the width is rounded to ``multiple`` and must land within 2%."""
    want = count_parameters(preset, vocab_size, arch=target)
    base_ffn = PRESETS[preset]["ffn_dim"]
    at_base = count_parameters(preset, vocab_size, arch=arch)
    slope = (count_parameters(preset, vocab_size, arch=arch, ffn_dim=base_ffn + multiple) - at_base) / multiple
    ffn = max(multiple, multiple * round((base_ffn + (want - at_base) / slope) / multiple))
    got = count_parameters(preset, vocab_size, arch=arch, ffn_dim=ffn)
    if abs(got - want) > 0.02 * want:
        raise ValueError(f"--preset {preset}: no {arch} --ffn-dim (multiple of {multiple}) is within 2% of "
                         f"{target}'s {want:,} parameters (best: {ffn}, {got:,})")
    return ffn, got, want


# ------------------------------------------------------------------------------------------ runs


def provenance() -> dict:
    """Date, device, torch version, git commit and whether the tree differs from it (the commit from
    BREATH_GIT_COMMIT in a copy without .git: ``provenance.git_commit``)."""
    import torch

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
            "torch": torch.__version__, **git_commit()}


def run_one(args: argparse.Namespace, variant: str, seed: int, flags: list[str], meta: dict) -> dict:
    """One variant at one seed: skipped when its ``result.json`` is there without an error, else
    trained from scratch (what a cut or failed attempt left is deleted: its metrics would mix in)."""
    root = args.output_dir / args.dataset / f"seed{seed}"
    result_path = root / "runs" / args.dataset / variant / "result.json"
    if result_path.exists():
        done = json.loads(result_path.read_text())
        if "error" not in done:
            print(f"{args.dataset} / {variant} / seed {seed}: done before, skipped", flush=True)
            return done
    shutil.rmtree(result_path.parent, ignore_errors=True)
    run_args = argparse.Namespace(**{**vars(args), "seed": seed, "output_dir": root, "sample_tokens": 0})
    started = time.perf_counter()
    print(f"{args.dataset} / {variant} / seed {seed}: training ...", flush=True)
    row = lm_compare.benchmark_model(run_args, args.dataset, variant, flags, args.n_seq)
    row.update(variant=variant, seed=seed, **meta, **provenance())
    evaluated = Path(row["run_dir"]) / "eval_test.json"
    if "error" not in row and evaluated.exists():
        test = json.loads(evaluated.read_text())
        row.update(word_ppl=test["word_perplexity"], eval_command=_eval_command(row))
    strided = Path(row["run_dir"]) / "eval_strided_test.json"
    if "error" not in row and strided.exists():
        test = json.loads(strided.read_text())
        row.update(strided_word_ppl=test["word_perplexity"], eval_stride=test["stride"])
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(row, indent=2) + "\n")
    print(f"{args.dataset} / {variant} / seed {seed}: " + (row.get("error") or
          f"best val {row['best_val_loss']:.4f}, test ppl {row['test_ppl']:.2f}, "
          f"{time.perf_counter() - started:.0f} s"), flush=True)
    return row


def _eval_command(row: dict) -> str:
    """The ``breath eval`` command line, as the run's commands.log recorded it."""
    log = (Path(row["run_dir"]) / "commands.log").read_text().splitlines()
    return next((line[2:] for line in log if line.startswith("$ ") and " eval " in line), "")


# ------------------------------------------------------------------------------------- aggregates


def mean_std(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value) and n."""
    values = [v for v in values if v is not None]
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def aggregate(rows: list[dict]) -> dict:
    """Per (dataset, variant): mean ± std of METRICS; ratio rows paired by seed; ablation gains."""
    ok = [r for r in rows if "error" not in r]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in ok:
        groups.setdefault((r["dataset"], r["variant"]), []).append(r)
    order = sorted(groups, key=lambda key: (key[0], list(VARIANTS).index(key[1])))  # datasets, then VARIANTS
    variants = {f"{d} / {v}": {m: mean_std([r.get(m) for r in groups[d, v]]) for m in METRICS} for d, v in order}
    ratios, gains = {}, {}
    for dataset in sorted({d for d, _ in groups}):
        by_seed = {v: {r["seed"]: r for r in groups.get((dataset, v), [])} for v in VARIANTS}
        for top, bottom in RATIOS:
            seeds = sorted(set(by_seed[top]) & set(by_seed[bottom]))
            if seeds:
                ratios[f"{dataset} / {top}/{bottom}"] = mean_std(
                    [by_seed[top][s]["test_ppl"] / by_seed[bottom][s]["test_ppl"] for s in seeds])
        full = variants.get(f"{dataset} / phase2", {}).get("best_val_loss")
        for name in ABLATION_NAMES:
            ablated = variants.get(f"{dataset} / {name}", {}).get("best_val_loss")
            if full and ablated:
                gains[f"{dataset} / {name}"] = ablation_gain(full, ablated)
    return {"variants": variants, "ratios": ratios, "ablation_gains": gains}


def ablation_gain(full: dict, ablated: dict) -> dict:
    """What the mechanism gains: ablated − full best validation loss (> 0: the mechanism helps), in
    units of the pooled seed std σ = √((s₁² + s₂²)/2); verdict "yes" when the gain exceeds 2σ."""
    gain = ablated["mean"] - full["mean"]
    if full["std"] is None or ablated["std"] is None:
        return {"gain": gain, "pooled_std": None, "sigmas": None, "above_2_sigma": None}
    pooled = math.sqrt((full["std"] ** 2 + ablated["std"] ** 2) / 2)
    sigmas = gain / pooled if pooled > 0 else math.copysign(math.inf, gain) if gain else 0.0
    return {"gain": gain, "pooled_std": pooled, "sigmas": sigmas, "above_2_sigma": sigmas > 2}


# ------------------------------------------------------------------------------------------ report


def pm(stat: dict, spec: str) -> str:
    if stat["mean"] is None:
        return "—"
    spread = "" if stat["std"] is None else f" ± {format(stat['std'], spec)}"
    return f"{format(stat['mean'], spec)}{spread}"


def caption(rows: list[dict]) -> str:
    """Date(s), device(s), command(s) and commit(s) of the runs behind a table."""
    def values(key: str) -> str:
        return ", ".join(sorted({str(r.get(key)) for r in rows}))

    commits = sorted({r["git_commit"][:10] + (" (dirty)" if r["git_dirty"] else "") for r in rows})
    return (f"{values('date')}; {values('device')}; torch {values('torch')}; commit {', '.join(commits)}; "
            f"`{values('command')}`")


def report_markdown(rows: list[dict], agg: dict) -> str:
    ok = [r for r in rows if "error" not in r]
    lines = [f"Runs: {len(ok)} finished" + (f", {len(rows) - len(ok)} failed: "
             + "; ".join(f"{r['variant']} seed {r['seed']}: {r['error']}" for r in rows if "error" in r)
             if len(rows) > len(ok) else ""), ""]
    for dataset in sorted({r["dataset"] for r in ok}):
        dataset_rows = [r for r in ok if r["dataset"] == dataset]
        lines += [f"### {dataset}", "", caption(dataset_rows), "",
                  "| variant | n | params | train tokens | best val loss | best val ppl | test ppl | "
                  "per-word test ppl | per-word test ppl, sliding windows | train s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key, stats in agg["variants"].items():
            if key.startswith(f"{dataset} / "):
                lines.append(f"| {key.split(' / ', 1)[1]} | {stats['best_val_loss']['n']} | "
                             f"{stats['parameters']['mean'] / 1e6:.2f}M | {stats['train_tokens']['mean']:,.0f} | "
                             f"{pm(stats['best_val_loss'], '.4f')} | {pm(stats['best_val_ppl'], '.2f')} | "
                             f"{pm(stats['test_ppl'], '.2f')} | {pm(stats['word_ppl'], '.2f')} | "
                             f"{pm(stats['strided_word_ppl'], '.2f')} | {pm(stats['train_time_s'], '.1f')} |")
        ratios = {k: v for k, v in agg["ratios"].items() if k.startswith(f"{dataset} / ")}
        if ratios:
            lines += ["", "| test-ppl ratio (paired by seed) | n | mean ± std |", "| --- | ---: | ---: |"]
            lines += [f"| {k.split(' / ', 1)[1]} | {v['n']} | {pm(v, '.3f')} |" for k, v in ratios.items()]
        gains = {k: v for k, v in agg["ablation_gains"].items() if k.startswith(f"{dataset} / ")}
        if gains:
            lines += ["", "| ablation | val-loss gain of the mechanism | pooled seed std σ | gain / σ | > 2σ |",
                      "| --- | ---: | ---: | ---: | --- |"]
            for k, g in gains.items():
                verdict = "—" if g["above_2_sigma"] is None else "yes" if g["above_2_sigma"] else "no"
                lines.append(f"| {k.split(' / ', 1)[1]} | {g['gain']:+.4f} | "
                             f"{lm_compare.fmt(g['pooled_std'], '.4f')} | {lm_compare.fmt(g['sigmas'], '+.1f')} | "
                             f"{verdict} |")
        lines.append("")
    return "\n".join(lines)


def write_report(rows: list[dict], output_dir: Path) -> Path:
    agg = aggregate(rows)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "study.json").write_text(json.dumps({"runs": rows, **agg}, indent=2) + "\n")
    markdown = output_dir / "study.md"
    markdown.write_text(report_markdown(rows, agg))
    return markdown


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", nargs="+", type=Path, metavar="RESULT_JSON",
                        help="rebuild study.json/study.md from these result.json files; run nothing")
    parser.add_argument("--dataset", default="ptb", help="one dataset (default: ptb)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated (default: all: "
                        f"{','.join(VARIANTS)})")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default: 0,1,2)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--token-budget", type=int, help="training tokens per run")
    budget.add_argument("--until-converged", action="store_true",
                        help="whole epochs until validation stops improving (--patience), at most --num-epochs")
    parser.add_argument("--patience", type=int, default=2, help="with --until-converged (default: 2)")
    parser.add_argument("--num-epochs", type=int, default=3, help="validations per run; the cap with "
                        "--until-converged (default: 3)")
    parser.add_argument("--preset", default="base", choices=tuple(PRESETS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-seq", type=int, help="training window (default: the preset's)")
    parser.add_argument("--vocab-size", type=int, default=10000, help="requested vocabulary (default: 10000)")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--val-batches", type=int, default=10**9,
                        help="validation batches per epoch, at most (default: the whole split)")
    parser.add_argument("--test-batches", type=int, help="test batches (default: the whole split)")
    parser.add_argument("--eval-stride", type=int, metavar="S",
                        help="also evaluate the test split in sliding windows, one every S tokens (breath eval "
                             "--stride: every token with >= n_seq - S tokens of context, as published results)")
    parser.add_argument("--device", help="passed to every command (default: theirs, cuda when available)")
    parser.add_argument("--train-args", default="", help='extra flags for every run (the same for every arch), '
                        'e.g. "--compile --dropout 0.3"')
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (parallel processes; default: 1)")
    parser.add_argument("--stop-after", type=float, help="start no new run after this many seconds")
    parser.add_argument("--output-dir", type=Path, default=REPO / "benchmarks" / "results" / "study")
    args = parser.parse_args(argv)
    if args.report:
        return args
    args.variants = [v for v in args.variants.split(",") if v]
    for variant in args.variants:
        if variant not in VARIANTS:
            parser.error(f"--variants: unknown {variant!r}; allowed: {', '.join(VARIANTS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds: got {args.seeds!r}; allowed: comma-separated integers")
    if not (args.token_budget or args.until_converged):
        parser.error("one of --token-budget N or --until-converged is required")
    if args.num_epochs < 1 or args.patience < 1 or args.jobs < 1:
        parser.error("--num-epochs, --patience and --jobs must be >= 1")
    args.n_seq = args.n_seq or PRESETS[args.preset]["n_seq"]
    if args.token_budget:
        args.max_steps = args.token_budget // (args.batch_size * args.n_seq)
        if args.max_steps < args.num_epochs:
            parser.error(f"--token-budget {args.token_budget} gives {args.max_steps} steps of {args.batch_size} × "
                         f"{args.n_seq} tokens, fewer than --num-epochs {args.num_epochs}")
    else:  # each epoch: the whole split (the trainer caps --num-train-batches at what the split holds)
        args.max_steps = args.num_epochs * 10**9
        args.train_args += f" --early-stopping-patience {args.patience}"
    args.train_args += f" --vocab-size {args.vocab_size}"
    return args


def variant_flags(args: argparse.Namespace) -> dict[str, list[str]]:
    flags = {v: list(VARIANTS[v]) for v in args.variants}
    if "phase1-matched" in flags:
        ffn, got, want = matched_ffn_dim(args.preset, args.vocab_size)
        print(f"phase1-matched: --ffn-dim {ffn}: {got:,} parameters; phase2: {want:,} "
              f"({(got - want) / want:+.2%}; counted at --vocab-size {args.vocab_size})", flush=True)
        flags["phase1-matched"] += ["--ffn-dim", str(ffn)]
    return flags


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        rows = [json.loads(path.read_text()) for path in args.report]
        print(write_report(rows, args.output_dir).read_text())
        return
    meta = {"device": lm_compare.device_name(args.device),
            "command": shlex.join(["python", "benchmarks/study.py", *(argv if argv is not None else sys.argv[1:])]),
            "budget": (f"{args.token_budget:,} tokens" if args.token_budget else
                       f"until converged (patience {args.patience}, at most {args.num_epochs} epochs)")}
    runs = [(v, seed, flags) for seed in args.seeds for v, flags in variant_flags(args).items()]
    started = time.perf_counter()

    def task(run: tuple[str, int, list[str]]) -> dict | None:
        if args.stop_after is not None and time.perf_counter() - started > args.stop_after:
            return None  # not started: the next command picks it up
        return run_one(args, *run, meta)

    # The first run alone: it prepares the corpus and tokenizer, whose cache has no lock against
    # several processes writing it at once.
    skipped = sum(task(run) is None for run in runs[:1])
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        skipped += sum(row is None for row in pool.map(task, runs[1:]))
    if skipped:
        print(f"--stop-after {args.stop_after:g} s: {skipped} runs not started; run the same command again to "
              "continue", flush=True)
    # The report covers every finished run of this dataset, those of earlier commands included.
    root = args.output_dir / args.dataset
    rows = [json.loads(path.read_text()) for path in sorted(root.glob("seed*/runs/*/*/result.json"))]
    print(write_report(rows, root).read_text())


if __name__ == "__main__":
    main()
