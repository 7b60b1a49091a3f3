"""Multi-query associative recall (MQAR): can the model look up values it was shown earlier?

The task of Zoology (Arora et al. 2023) and Based: each sequence starts with ``pairs`` key–value
pairs ``k₁ v₁ k₂ v₂ …`` (keys and values drawn without repetition from disjoint halves of the
vocabulary); then every key is queried once, alone, at a power-law-distributed gap after the pairs,
and the model must emit the value that followed it. Everything else is a pad token. Only the query
positions carry a loss; accuracy is the fraction of queries answered exactly (greedy argmax).

A model without memory (Phase 1) can only guess among the values (accuracy ≈ 1/pairs at best);
attention and a working associative memory should approach 100%.

Recipe (the same for every arch): AdamW (β 0.9/0.98, weight decay 0.1 on matrices and embeddings),
linear warmup over the first 10% of the steps then cosine decay to 0, gradient clipping at 1,
dropout 0, bf16 autocast on CUDA. Progress (loss, accuracy on a fixed held-out batch) is printed
every ``--log-every`` steps.

``--mix PAIRS:LEN …`` trains on a mixture, as Zoology does (its training sets are dominated by short,
easy sequences such as 4 pairs in 64 tokens): each batch is split evenly between the headline task and
each listed setting, whose sequences are right-padded to the headline length (PAD inputs, IGNORE
labels; a causal model reads them as the shorter sequences they are). The hope is that easy rows
let attention form its induction circuit early; in the one test so far (CPU, QUALITY.md) they did
not: the transformer stayed at chance with the mixture and escaped without it. The mixture is the same for every
arch, and evaluation (progress and final accuracy) stays on the headline task. With ``--sweep`` a
sweep setting gets the mixed items that fit it (LEN ≤ its length); the others are skipped, and the
printout says which.

``--filler random`` fills the inputs that are neither pairs nor queries with random tokens instead of
PAD, as Zoology's ``random_non_queries`` does, but never with one of the sequence's keys (see
``make_batch``); the labels are the same. It did not help the transformer leave its plateau
(16 pairs, T 128, batch 64, CPU, two seeds: at chance after 1500 steps).

``--report A.json B.json …`` trains nothing: it merges the results of earlier runs (each written by
``--output``, e.g. one per GPU of a split sweep) into ``--output`` and its table and plots.

    python benchmarks/mqar.py                         # the headline check: T 256, 16 pairs, d_model 128
    python benchmarks/mqar.py --sweep                 # also pairs × length: where each arch breaks
    python benchmarks/mqar.py --mix 4:64 8:128        # train on a Zoology-like mixture of easier settings
    python benchmarks/mqar.py --report a.json b.json --output merged.json   # merge earlier runs
    OMP_NUM_THREADS=2 python benchmarks/mqar.py --device cpu --pairs 8 --seq-len 64 --vocab-size 64 \
        --d-model 64 --steps 3000 --batch-size 64 --output benchmarks/results/mqar_cpu_small.json

Writes ``--output`` (JSON: arguments and one entry per run, with its learning curve), the same
stem with ``.md`` (a markdown table) and, when matplotlib is importable, ``.png`` (learning curves)
and, when the results span several (pairs, length) settings, ``_sweep.png`` (accuracy against pairs,
one panel per length).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from breath import ModelConfig, build_model

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.provenance import git_commit  # noqa: E402

PAD = 0
IGNORE = -100
FILLERS = ("pad", "random")


@dataclass(frozen=True)
class Task:
    pairs: int = 16
    seq_len: int = 256
    vocab_size: int = 256  # keys from [1, 1 + V/2), values from [1 + V/2, V)
    gap_power: float = 0.01  # query gaps ∝ gap^(gap_power − 1) (Zoology's power_a)
    filler: str = "pad"  # what fills the rest of the inputs: "pad" or "random" (see make_batch)

    def validate(self) -> None:
        half = (self.vocab_size - 1) // 2
        if self.pairs > half:
            raise ValueError(f"pairs: {self.pairs} exceeds the {half} distinct keys of vocab {self.vocab_size}")
        if self.filler not in FILLERS:
            raise ValueError(f"filler: got {self.filler!r}; allowed: {' | '.join(FILLERS)}")
        if 4 * self.pairs > self.seq_len:
            raise ValueError(f"seq_len: {self.seq_len} too short for {self.pairs} pairs and queries "
                             f"(needs >= {4 * self.pairs})")


def make_batch(task: Task, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (batch, seq_len) and labels (IGNORE except at query positions, where the value is).

    Zoology's layout: ``k₁ v₁ … kₙ vₙ`` then the n keys again in random order, each at an even
    offset of the query section drawn without replacement with probability ∝ gap^(gap_power − 1)
    (most queries close to the pairs, some far), PAD everywhere else. Only the query *key* is in
    the inputs: the label at its position is its value, i.e. the token the model must emit after
    reading ``inputs[:p + 1]``; the value itself never appears in the query section (if it did,
    "the one value not yet shown" would answer the last queries without any recall).

    ``task.filler == "random"`` (Zoology's ``random_non_queries``) replaces those PADs, in the inputs
    only, by tokens drawn uniformly from the vocabulary *except this sequence's keys*, after every
    other draw (keys, values, gaps and order are those of "pad" with the same generator; labels are
    unchanged). Zoology draws from the whole vocabulary and does nothing about a filler equal to a
    key: at its vocabulary of 8192 that is 16/8192 = 0.2% of the filler at 16 pairs, but at ours
    (128) it would be 12.5%, a second, unlabelled occurrence of a queried key followed by a random
    token — a distractor for a lookup (and a wrong key→token write for a recurrent memory) that
    Zoology never had. Values and PAD may still be drawn: they are never looked up.

    The tensors are made on ``generator``'s device (on a GPU: no host work or copy per step).
    """
    half = (task.vocab_size - 1) // 2
    n, length, device = task.pairs, task.seq_len, generator.device
    keys = torch.argsort(torch.rand(batch, half, generator=generator, device=device), dim=1)[:, :n] + 1
    values = torch.argsort(torch.rand(batch, half, generator=generator, device=device), dim=1)[:, :n] + 1 + half
    inputs = torch.full((batch, length), PAD, dtype=torch.long, device=device)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long, device=device)
    inputs[:, 0 : 2 * n : 2], inputs[:, 1 : 2 * n : 2] = keys, values
    slots = (length - 2 * n) // 2
    gap_weights = torch.arange(1, slots + 1, dtype=torch.float64, device=device) ** (task.gap_power - 1)
    gaps = torch.multinomial(gap_weights.expand(batch, slots), n, replacement=False, generator=generator)
    positions = 2 * n + 2 * gaps
    order = torch.argsort(torch.rand(batch, n, generator=generator, device=device), dim=1)
    rows = torch.arange(batch, device=device)[:, None]
    inputs[rows, positions] = keys.gather(1, order)
    labels[rows, positions] = values.gather(1, order)
    if task.filler == "random":
        # Uniform over the vocab minus the n keys: draw r in [0, V - n), then step r over each key
        # ≤ it, in increasing order (the r-th token that is not a key).
        filler = torch.randint(0, task.vocab_size - n, (batch, length), generator=generator, device=device)
        for key in keys.sort(dim=1).values.unbind(1):
            filler += filler >= key[:, None]
        rest = labels == IGNORE
        rest[:, : 2 * n] = False
        inputs[rest] = filler[rest]
    return inputs, labels


def mix_problem(pairs: int, length: int, task: Task) -> str | None:
    """The rule a mixed setting (``pairs`` in ``length`` tokens) of ``task`` breaks, or None."""
    half = (task.vocab_size - 1) // 2
    if length > task.seq_len:
        return f"LEN <= seq_len {task.seq_len}"
    if 4 * pairs > length:
        return "4 * PAIRS <= LEN (room for the pairs and their queries)"
    if pairs > half:
        return f"PAIRS <= {half}, the distinct keys of vocab {task.vocab_size}"
    return None


def parse_mix(items: list[str], task: Task) -> list[tuple[int, int]]:
    """``["4:64", "8:128"]`` → ``[(4, 64), (8, 128)]``, each checked against the headline ``task``."""
    mix = []
    for item in items:
        pairs, sep, length = item.partition(":")
        if not (sep and pairs.isdigit() and length.isdigit() and int(pairs) > 0):
            raise SystemExit(f"--mix: expected PAIRS:LEN with positive integers, got {item!r}")
        problem = mix_problem(int(pairs), int(length), task)
        if problem:
            raise SystemExit(f"--mix: {item!r} breaks the rule {problem} of the headline task "
                             f"({task.pairs} pairs, seq_len {task.seq_len}, vocab {task.vocab_size})")
        mix.append((int(pairs), int(length)))
    return mix


def make_mixed_batch(task: Task, mix: list[tuple[int, int]], batch: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch split as evenly as possible between ``task`` and each (pairs, seq_len) of ``mix``.

    Rows come in that order (the first ``batch % (1 + len(mix))`` settings get one row more); a mixed
    setting's rows are right-padded to ``task.seq_len`` with PAD inputs and IGNORE labels. Without a
    mix this is ``make_batch(task, batch, generator)``, same random stream included."""
    if not mix:
        return make_batch(task, batch, generator)
    tasks = [task] + [dataclasses.replace(task, pairs=p, seq_len=t) for p, t in mix]
    inputs, labels = [], []
    for i, part in enumerate(tasks):
        rows = batch // len(tasks) + (i < batch % len(tasks))
        if rows:
            x, y = make_batch(part, rows, generator)
            inputs.append(F.pad(x, (0, task.seq_len - part.seq_len), value=PAD))
            labels.append(F.pad(y, (0, task.seq_len - part.seq_len), value=IGNORE))
    return torch.cat(inputs), torch.cat(labels)


def model_config(arch: str, task: Task, d_model: int, n_layers: int, overrides: dict | None = None) -> ModelConfig:
    heads = max(1, d_model // 64)
    return ModelConfig(**{**dict(arch=arch, vocab_size=task.vocab_size, d_model=d_model, n_layers=n_layers,
                                 n_seq=task.seq_len, num_heads=heads, head_dim=d_model // heads,
                                 ffn_dim=2 * d_model, dropout=0.0), **(overrides or {})}).validate()


def parse_overrides(items: list[str]) -> dict:
    """``["memory_conv=4", "memory_key_shift=false"]`` → ``{"memory_conv": 4, "memory_key_shift": False}``
    (values read as JSON, else kept as strings)."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set: expected FIELD=VALUE with FIELD a ModelConfig field, got {item!r}; "
                             f"fields: {', '.join(sorted(fields))}")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    return overrides


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, steps: int, warmup_fraction: float):
    """AdamW with weight decay on matrices and embeddings only; linear warmup, then cosine to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))
    warmup = max(1, round(warmup_fraction * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], autocast) -> float:
    """Fraction of query positions whose greedy prediction is the label."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with autocast:
        for inputs, labels in batches:
            predictions = model(inputs).logits.argmax(-1)
            mask = labels != IGNORE
            correct += (predictions[mask] == labels[mask]).sum().item()
            total += mask.sum().item()
    model.train(was_training)
    return correct / total


def held_out(task: Task, sequences: int, batch: int, seed: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator(device).manual_seed(seed)
    sizes = [batch] * (sequences // batch) + ([sequences % batch] if sequences % batch else [])
    return [make_batch(task, size, generator) for size in sizes]


def train_and_evaluate(arch: str, task: Task, *, steps: int, batch: int, d_model: int, n_layers: int,
                       lr: float, device: str, weight_decay: float = 0.1, warmup_fraction: float = 0.1,
                       seed: int = 0, eval_sequences: int = 2048, log_every: int = 0,
                       overrides: dict | None = None, mix: list[tuple[int, int]] | None = None) -> dict:
    """Train ``arch`` on fresh batches for ``steps`` steps; accuracy on ``eval_sequences`` unseen ones.

    Every ``log_every`` steps (0: never) prints the loss and the accuracy on a fixed held-out batch
    (recorded in the result's ``curve``). ``overrides`` are ModelConfig fields set on top of the task's;
    ``mix`` lists (pairs, seq_len) settings trained on alongside ``task`` (see ``make_mixed_batch``);
    progress and final accuracy are on ``task`` alone."""
    task.validate()
    mix = [tuple(m) for m in mix or []]
    for pairs, length in mix:
        if problem := mix_problem(pairs, length, task):
            raise ValueError(f"mix: {pairs}:{length} breaks the rule {problem}")
    torch.manual_seed(seed)
    model = build_model(model_config(arch, task, d_model, n_layers, overrides)).to(device)
    optimizer, schedule = make_optimizer(model, lr, weight_decay, steps, warmup_fraction)
    generator = torch.Generator(device).manual_seed(seed)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.startswith("cuda"))
    probe = held_out(task, min(256, eval_sequences), batch, seed + 2, device)
    curve = []
    start = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        inputs, labels = make_mixed_batch(task, mix, batch, generator)
        with autocast:
            logits = model(inputs).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if log_every and (step % log_every == 0 or step == steps):
            curve.append({"step": step, "loss": round(loss.item(), 4), "accuracy": accuracy(model, probe, autocast)})
            print(f"  {arch:12s} step {step:6d}/{steps}  loss {curve[-1]['loss']:.4f}  "
                  f"accuracy {curve[-1]['accuracy']:.4f}  {time.perf_counter() - start:6.0f}s", flush=True)
    train_seconds = time.perf_counter() - start
    final = accuracy(model, held_out(task, eval_sequences, batch, seed + 1, device), autocast)
    return {"arch": arch, "overrides": overrides or {}, "mix": [list(m) for m in mix], "learning_rate": lr,
            "pairs": task.pairs, "seq_len": task.seq_len, "vocab_size": task.vocab_size, "filler": task.filler,
            "d_model": d_model, "n_layers": n_layers, "parameters": model.num_parameters(),
            "accuracy": final, "final_loss": loss.item(), "steps": steps, "batch_size": batch,
            "train_seconds": round(train_seconds, 1), "curve": curve}


def run_label(result: dict) -> str:
    """The arch, any ``--set`` overrides, any ``--mix`` and a random filler of a run, e.g.
    ``phase2 memory_conv=0 mix 4:64,8:128 random filler``."""
    mix = result.get("mix") or []
    return (result["arch"] + "".join(f" {k}={v}" for k, v in result.get("overrides", {}).items())
            + (" mix " + ",".join(f"{p}:{t}" for p, t in mix) if mix else "")
            + (" random filler" if result.get("filler", "pad") != "pad" else ""))


def markdown_table(results: list[dict]) -> str:
    lines = ["| arch | pairs | T | vocab | d_model | lr | steps | accuracy | 1/pairs | final loss | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {run_label(r)} | {r['pairs']} | {r['seq_len']} | {r['vocab_size']} | {r['d_model']} | "
                     f"{r.get('learning_rate', '')} | "
                     f"{r['steps']} | {100 * r['accuracy']:.1f}% | {100 / r['pairs']:.1f}% | "
                     f"{r['final_loss']:.3f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_curves(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r in results:
        if r["curve"]:
            ax.plot([c["step"] for c in r["curve"]], [c["accuracy"] for c in r["curve"]],
                    label=f"{run_label(r)} ({r['pairs']} pairs, T {r['seq_len']})")
    ax.set(title="MQAR: held-out accuracy while training", xlabel="step", ylabel="accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["seq_len"] for r in results})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.5 * len(lengths), 3.5), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        for label in sorted({run_label(r) for r in results}):
            rows = sorted((r for r in results if run_label(r) == label and r["seq_len"] == length),
                          key=lambda r: r["pairs"])
            ax.plot([r["pairs"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=label)
        ax.set(title=f"MQAR, T = {length}", xlabel="key-value pairs", ylabel="accuracy", ylim=(0, 1.02))
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: list[dict], output: Path) -> str:
    """The ``.md`` table and the plots next to ``output`` (the sweep plot when the results span more
    than one (pairs, seq_len) setting); returns the table."""
    table = markdown_table(results)
    output.with_suffix(".md").write_text(table)
    try:
        if any(r["curve"] for r in results):
            plot_curves(results, output.with_suffix(".png"))
        if len({(r["pairs"], r["seq_len"]) for r in results}) > 1:
            plot_sweep(results, output.with_name(output.stem + "_sweep.png"))
    except ImportError:
        print("matplotlib not importable: no plots")
    return table


def merge_reports(paths: list[Path]) -> dict:
    """The results, environments and commands of several ``--output`` JSON files (merged ones too)."""
    merged = {"inputs": [str(p) for p in paths], "environments": [], "commands": [], "results": []}
    for path in paths:
        data = json.loads(Path(path).read_text())
        merged["environments"] += data.get("environments", [data.get("environment")])
        merged["commands"] += data.get("commands", [data.get("command")])
        merged["results"] += data["results"]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description="Multi-query associative recall for phase2, phase1 and transformer.")
    parser.add_argument("--archs", default="phase2,transformer,phase1", help="comma-separated, run one after another")
    parser.add_argument("--pairs", type=int, default=16, help="key-value pairs per sequence")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=256, help="keys in the lower half, values in the upper")
    parser.add_argument("--filler", choices=FILLERS, default="pad",
                        help="the inputs that are neither pairs nor queries: PAD, or random tokens other than "
                             "the sequence's keys (Zoology's random_non_queries); labels are the same")
    parser.add_argument("--d-model", type=int, default=128, help="width (heads of 64)")
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000, help="training steps per arch and setting")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup-fraction", type=float, default=0.1, help="linear warmup, then cosine to 0")
    parser.add_argument("--eval-sequences", type=int, default=2048, help="held-out sequences for the final accuracy")
    parser.add_argument("--log-every", type=int, default=250, help="print progress every N steps (0: never)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="ModelConfig fields for every model, e.g. --set memory_conv=4 memory_key_shift=false")
    parser.add_argument("--mix", nargs="+", default=[], metavar="PAIRS:LEN",
                        help="also train on these settings (each batch split evenly with the headline task, "
                             "rows right-padded), e.g. --mix 4:64 8:128; evaluation stays on the headline task")
    parser.add_argument("--report", nargs="+", type=Path, metavar="JSON",
                        help="train nothing: merge these --output files of earlier runs into --output, .md, plots")
    parser.add_argument("--sweep", action="store_true",
                        help="also sweep --sweep-pairs x --sweep-lengths where 4 x pairs <= length "
                             "(vocab >= 4 x pairs + 1)")
    parser.add_argument("--sweep-pairs", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--sweep-lengths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/mqar.json"),
                        help="JSON results; a .md table and .png plots are written next to it")
    args = parser.parse_args()

    if args.report:
        merged = merge_reports(args.report)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(merged, indent=2))
        print(write_outputs(merged["results"], args.output))
        return
    overrides = parse_overrides(args.set)
    mix = parse_mix(args.mix, Task(pairs=args.pairs, seq_len=args.seq_len,
                                   vocab_size=max(args.vocab_size, 4 * args.pairs + 1), filler=args.filler))
    settings = [(args.pairs, args.seq_len)]
    if args.sweep:
        settings += [(p, t) for t in args.sweep_lengths for p in args.sweep_pairs
                     if 4 * p <= t and (p, t) != (args.pairs, args.seq_len)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    device = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
              else f"cpu, {torch.get_num_threads()} threads")
    environment = {"device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), **git_commit()}
    print(f"{command}\n{environment}", flush=True)
    results = []
    for pairs, length in settings:
        task = Task(pairs=pairs, seq_len=length, vocab_size=max(args.vocab_size, 4 * pairs + 1), filler=args.filler)
        fitting = [m for m in mix if not mix_problem(*m, task)]
        for p, t in sorted(set(mix) - set(fitting)):
            print(f"pairs {pairs} T {length}: --mix item {p}:{t} skipped, it breaks {mix_problem(p, t, task)}")
        for arch in args.archs.split(","):
            result = train_and_evaluate(arch, task, steps=args.steps, batch=args.batch_size,
                                        d_model=args.d_model, n_layers=args.n_layers, lr=args.learning_rate,
                                        weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction,
                                        device=args.device, seed=args.seed, eval_sequences=args.eval_sequences,
                                        log_every=args.log_every, overrides=overrides, mix=fitting)
            results.append(result)
            print(f"{arch:12s} pairs {pairs:4d}  T {length:5d}  accuracy {result['accuracy']:.4f}  "
                  f"loss {result['final_loss']:.4f}  {result['train_seconds']:.0f}s", flush=True)
            # Written after every run, so an interrupted sweep keeps what it finished.
            args.output.write_text(json.dumps({"environment": environment, "command": command,
                                               "args": {k: str(v) for k, v in vars(args).items()},
                                               "results": results}, indent=2))
    print("\n" + write_outputs(results, args.output))


if __name__ == "__main__":
    main()
