"""Phase 2 training demo: a quick run on Shakespeare, then its history and its best checkpoint.

    python examples/phase2_training_demo.py [--output-dir runs/demo]

About a minute on a laptop CPU, plus the one-time download of the corpus. The same run from a
shell: ``breath train --preset small --n-seq 128 --num-epochs 2 ...`` (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

from breath.cli import main as breath
from breath.runs import load_model


def quick_run(output_dir: Path) -> None:
    """Train the small preset with 128-token windows for 2 short epochs."""
    code = breath(["train", "--preset", "small", "--n-seq", "128", "--num-epochs", "2",
                   "--num-train-batches", "20", "--num-val-batches", "4", "--learning-rate", "5e-4",
                   "--log-every", "5", "--output-dir", str(output_dir)])
    if code != 0:
        raise SystemExit(code)


def show_history(output_dir: Path) -> None:
    """Per-epoch losses and mechanism statistics from training_history.json."""
    history = json.loads((output_dir / "training_history.json").read_text())
    print(f"\n{'epoch':>5} {'train':>8} {'val':>8} {'Γ mean':>8} {'SNR':>6} {'stable':>7}")
    rows = zip(history["train_losses"], history["val_losses"], history["gamma_history"],
               history["snr_history"], history["stability_history"])
    for epoch, (train, val, gamma, snr, stability) in enumerate(rows, start=1):
        print(f"{epoch:>5} {train:>8.4f} {val:>8.4f} {gamma['mean']:>8.4f} {snr['mean']:>6.2f} "
              f"{stability['stable_ratio']:>7.3f}")
    print(f"best val loss {history['best_val_loss']:.4f} after {history['total_epochs']} epochs")


@torch.no_grad()
def continue_text(output_dir: Path, prompt: str, new_tokens: int = 40, temperature: float = 0.8,
                  top_k: int = 50) -> str:
    """Sample a continuation with the best checkpoint, one token at a time through the model state
    (after two short epochs expect Shakespeare-flavoured words, not sense)."""
    model, checkpoint = load_model(output_dir / "best_model.pt")
    model.eval()
    print(f"\nloaded best_model.pt: epoch {checkpoint['epoch']}, val loss {checkpoint['best_val_loss']:.4f}")
    tokenizer = Tokenizer.from_file(str(output_dir / "tokenizer.json"))
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([tokenizer.encode(prompt).ids])
    out = model(ids)
    for _ in range(new_tokens):
        logits, candidates = (out.logits[0, -1] / temperature).topk(top_k)
        choice = torch.multinomial(logits.softmax(-1), 1, generator=generator)
        next_id = candidates[choice].view(1, 1)
        ids = torch.cat([ids, next_id], dim=1)
        out = model(next_id, state=out.state)  # continue the sequence: no recomputation
    return tokenizer.decode(ids[0].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("runs/demo"))
    args = parser.parse_args()
    quick_run(args.output_dir)
    show_history(args.output_dir)
    print(continue_text(args.output_dir, "ROMEO:\n"))


if __name__ == "__main__":
    main()
