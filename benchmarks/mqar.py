"""Multi-query associative recall (MQAR): can the model look up values it was shown earlier?

Each sequence starts with ``pairs`` key–value pairs ``k₁ v₁ k₂ v₂ …`` (keys and values drawn without
repetition from disjoint ranges of the vocabulary); every key is then queried once, at a random
position of the rest of the sequence, and the model must predict the value that followed it.
Everything else is a pad token. Accuracy is the fraction of queries answered exactly (greedy).

A model without memory (Phase 1) can only guess among the values (accuracy ≈ 1/pairs at best);
attention and a working associative memory should approach 100%.

    python benchmarks/mqar.py --device cuda                         # the headline check
    python benchmarks/mqar.py --device cuda --sweep                 # pairs × length: where each breaks
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from breath import ModelConfig, build_model

PAD = 0
IGNORE = -100


@dataclass(frozen=True)
class Task:
    pairs: int = 16
    seq_len: int = 256
    vocab_size: int = 256  # keys from [1, 1 + V/2), values from [1 + V/2, V)
    gap_power: float = 0.01  # query gaps ∝ gap^(gap_power − 1) (Zoology's power_a)

    def validate(self) -> None:
        half = (self.vocab_size - 1) // 2
        if self.pairs > half:
            raise ValueError(f"pairs: {self.pairs} exceeds the {half} distinct keys of vocab {self.vocab_size}")
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
    """
    half = (task.vocab_size - 1) // 2
    n, length = task.pairs, task.seq_len
    keys = torch.argsort(torch.rand(batch, half, generator=generator), dim=1)[:, :n] + 1
    values = torch.argsort(torch.rand(batch, half, generator=generator), dim=1)[:, :n] + 1 + half
    inputs = torch.full((batch, length), PAD, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    inputs[:, 0 : 2 * n : 2], inputs[:, 1 : 2 * n : 2] = keys, values
    slots = (length - 2 * n) // 2
    gap_weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (task.gap_power - 1)
    gaps = torch.multinomial(gap_weights.expand(batch, slots), n, replacement=False, generator=generator)
    positions = 2 * n + 2 * gaps
    order = torch.argsort(torch.rand(batch, n, generator=generator), dim=1)
    rows = torch.arange(batch)[:, None]
    inputs[rows, positions] = keys.gather(1, order)
    labels[rows, positions] = values.gather(1, order)
    return inputs, labels


def model_config(arch: str, task: Task, d_model: int, n_layers: int) -> ModelConfig:
    heads = max(1, d_model // 64)
    return ModelConfig(arch=arch, vocab_size=task.vocab_size, d_model=d_model, n_layers=n_layers,
                       n_seq=task.seq_len, num_heads=heads, head_dim=d_model // heads,
                       ffn_dim=2 * d_model, dropout=0.0)


def train_and_evaluate(arch: str, task: Task, *, steps: int, batch: int, d_model: int, n_layers: int,
                       lr: float, device: str, seed: int = 0, eval_batches: int = 8) -> dict:
    task.validate()
    torch.manual_seed(seed)
    model = build_model(model_config(arch, task, d_model, n_layers)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.startswith("cuda"))
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        inputs, labels = (t.to(device) for t in make_batch(task, batch, generator))
        with autocast:
            logits = model(inputs).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    train_seconds = time.perf_counter() - start
    model.eval()
    correct = total = 0
    eval_generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad(), autocast:
        for _ in range(eval_batches):
            inputs, labels = (t.to(device) for t in make_batch(task, batch, eval_generator))
            predictions = model(inputs).logits.argmax(-1)
            mask = labels != IGNORE
            correct += (predictions[mask] == labels[mask]).sum().item()
            total += mask.sum().item()
    return {"arch": arch, "pairs": task.pairs, "seq_len": task.seq_len, "accuracy": correct / total,
            "final_loss": loss.item(), "steps": steps, "train_seconds": round(train_seconds, 1)}


def plot_sweep(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["seq_len"] for r in results})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.5 * len(lengths), 3.5), squeeze=False)
    for ax, length in zip(axes[0], lengths):
        for arch in sorted({r["arch"] for r in results}):
            rows = sorted((r for r in results if r["arch"] == arch and r["seq_len"] == length),
                          key=lambda r: r["pairs"])
            ax.plot([r["pairs"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=arch)
        ax.set(title=f"MQAR, T = {length}", xlabel="key-value pairs", ylabel="accuracy", ylim=(0, 1.02))
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description="Multi-query associative recall for phase2, phase1 and transformer.")
    parser.add_argument("--archs", default="phase2,transformer,phase1")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep", action="store_true", help="also sweep pairs {4..128} x length {128..1024}")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/mqar.json"))
    args = parser.parse_args()

    settings = [(args.pairs, args.seq_len)]
    if args.sweep:
        settings += [(p, t) for t in (128, 256, 512, 1024) for p in (4, 8, 16, 32, 64, 128)
                     if 4 * p <= t and (p, t) != (args.pairs, args.seq_len)]
    results = []
    for pairs, length in settings:
        task = Task(pairs=pairs, seq_len=length, vocab_size=max(args.vocab_size, 2 * pairs + 3))
        for arch in args.archs.split(","):
            result = train_and_evaluate(arch, task, steps=args.steps, batch=args.batch_size,
                                        d_model=args.d_model, n_layers=args.n_layers,
                                        lr=args.learning_rate, device=args.device)
            results.append(result)
            print(f"{arch:12s} pairs {pairs:4d}  T {length:5d}  accuracy {result['accuracy']:.4f}  "
                  f"loss {result['final_loss']:.4f}  {result['train_seconds']:.0f}s", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                       "results": results}, indent=2))
    if args.sweep:
        plot_sweep(results, args.output.with_suffix(".png"))
    print(f"\n{'arch':12s} {'pairs':>5s} {'T':>5s} {'accuracy':>9s}")
    for r in results:
        print(f"{r['arch']:12s} {r['pairs']:5d} {r['seq_len']:5d} {r['accuracy']:9.4f}")


if __name__ == "__main__":
    main()
