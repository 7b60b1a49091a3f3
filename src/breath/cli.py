"""The ``breath`` command line (also ``python -m breath`` and ``scripts/train_phase2.py``).

    breath train [options]                         train a model (see docs/training.md)
    breath eval RUN_DIR_OR_CHECKPOINT [options]     loss, perplexity, loss by position (docs/inference.md)
    breath generate RUN_DIR_OR_CHECKPOINT --prompt  stream a continuation
    breath export RUN_DIR_OR_CHECKPOINT             weights as safetensors + config + tokenizer

This module only turns arguments into configurations and exit codes; the work is done by
``breath.train`` and by ``breath.evaluate``, ``breath.generate`` and ``breath.export``.

Exit codes: 0 done; 1 the run failed (diverged, could not save); 2 a bad option or input (one
line on stderr, no traceback); 130/143 stopped by SIGINT/SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from breath import evaluate, export, generate
from breath.data.corpora import DataError
from breath.data.tokenizer import TOKENIZERS
from breath.data.windows import WindowDataset, prepare_data
from breath.models import ModelConfig, build_model
from breath.models.config import ARCHS, PRESETS, RESOLVENTS
from breath.io import SaveError, atomic_copy, atomic_write_json, prepare_output_dir
from breath.runs import CheckpointError, load_checkpoint
from breath.runtime import ConfigError, say
from breath.train.config import (PRECISIONS, TrainConfig, checkpoint_options, load_config_file, resolve_config,
                                 run_config, select_precision)
from breath.train.distributed import Distributed
from breath.train.metrics import WandbLog
from breath.train.trainer import SIGNAL_EXIT_CODES, Trainer, TrainResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE``, exit code 2, no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _defaults() -> dict[str, Any]:
    return {**ModelConfig().to_dict(), **TrainConfig().to_dict(), "use_triton": "on"}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``breath train``. Defaults are SUPPRESSed so the namespace holds only the
    flags given explicitly: that is what lets a flag override a preset and a config file."""
    defaults = _defaults()

    def add(group: argparse._ArgumentGroup, name: str, help: str, show_default: bool = True, **kwargs: Any) -> None:
        dest = name.replace("-", "_")
        if show_default and defaults.get(dest) is not None:
            help = f"{help} (default: {defaults[dest]})"
        if "type" in kwargs:
            kwargs.setdefault("metavar", {int: "N", float: "X"}[kwargs["type"]])
        group.add_argument(f"--{name}", dest=dest, default=argparse.SUPPRESS, help=help, **kwargs)

    def switch(group: argparse._ArgumentGroup, name: str, help: str) -> None:
        add(group, name, help, action=argparse.BooleanOptionalAction)

    run = parser.add_argument_group("run")
    add(run, "preset", "model size preset; explicit model flags override it", choices=tuple(PRESETS))
    add(run, "config", "YAML/JSON file of options (names as the flags; explicit flags override it)",
        metavar="FILE")
    add(run, "resume", "continue the run saved in this checkpoint exactly; its options are the "
        "defaults", metavar="PATH")

    model = parser.add_argument_group("model")
    add(model, "arch", "architecture", choices=ARCHS)
    add(model, "d-model", "model width", type=int)
    add(model, "n-layers", "number of blocks", type=int)
    add(model, "n-seq", "training context length (tokens per window)", type=int)
    add(model, "num-heads", "memory heads = BK channels (attention heads for the transformer)", type=int)
    add(model, "head-dim", "width of one head", type=int)
    add(model, "ffn-dim", "hidden width of the MLP", type=int)
    add(model, "dropout", "dropout probability", type=float)
    add(model, "resolvent", "BK resolvent; full (non-causal) is an ablation that leaks the future",
        choices=RESOLVENTS)

    phase2 = parser.add_argument_group("Phase 2 dynamics")
    add(phase2, "base-decay", "floor of the forgetting rate Γ (Γ = softplus(.) + base_decay)", type=float)
    add(phase2, "hebbian-eta", "Hebbian write strength η", type=float)
    add(phase2, "memory-chunk", "tokens per memory chunk; consolidation runs at chunk ends", type=int)
    add(phase2, "memory-conv", "width of a causal depthwise convolution on the memory's q, k, v (0: none)", type=int)
    switch(phase2, "memory-key-shift", "the memory writes the previous token's key with this token's value")
    add(phase2, "snr-threshold", "memories with SNR below it are forgotten faster", type=float)
    add(phase2, "gamma-boost", "Γ multiplier for the chunk after a low SNR", type=float)
    add(phase2, "eta-boost", "η multiplier for the chunk after a high SNR", type=float)
    add(phase2, "resonance-threshold", "keep zeta modes above this fraction of the mean energy", type=float)
    add(phase2, "lyapunov-gamma-step", "Γ added for the next chunk of an unstable head", type=float)
    add(phase2, "lyapunov-tolerance", "energy-growth tolerance of the Lyapunov check", type=float)
    add(phase2, "power-iterations", "power iterations per boundary for the SNR's top singular value", type=int)
    switch(phase2, "power-warm-start", "start the power iteration from the previous boundary's vector")
    switch(phase2, "zeta-position-embedding", "add the zeta position embedding")
    switch(phase2, "zeta-init", "zeta singular-value profile at initialisation")
    switch(phase2, "use-triton", "Triton kernels on CUDA; without CUDA the reference path runs")

    data = parser.add_argument_group("data")
    add(data, "dataset", "shakespeare | brown | ptb | english | a .txt/.jsonl file or directory | "
        "a Hugging Face dataset")
    add(data, "tokenizer", "byte-level BPE, or one token per whitespace-separated word and line end "
        "(default: word for ptb, else bpe)", choices=TOKENIZERS)
    add(data, "vocab-size", "vocabulary size to train (a small corpus may give fewer)", type=int)
    add(data, "cache-dir", "data and tokenizer cache (default: $BREATH_CACHE, else ~/.cache/breath)",
        show_default=False)
    add(data, "num-train-batches", "train batches per epoch (default: the whole split)", type=int)
    add(data, "num-val-batches", "validation batches per evaluation (default: the whole split)", type=int)

    optim = parser.add_argument_group("optimisation")
    add(optim, "batch-size", "windows per batch (per rank under torchrun: the global batch is this × ranks)",
        type=int)
    add(optim, "num-epochs", "epochs to train (the most, with --early-stopping-patience)", type=int)
    add(optim, "early-stopping-patience", "stop when validation has not improved for N epochs "
        "(default: never; the learning-rate schedule still spans --num-epochs)", type=int)
    add(optim, "learning-rate", "peak AdamW learning rate", type=float)
    add(optim, "weight-decay", "AdamW weight decay (not on norms, biases, embeddings)", type=float)
    add(optim, "gradient-clip-norm", "clip the global gradient norm to this (inf: off)", type=float)
    add(optim, "warmup-steps", "linear warmup steps (default: 5%% of the run)", type=int)
    add(optim, "min-lr-ratio", "cosine decays to learning-rate times this", type=float)
    add(optim, "max-bad-steps", "stop after this many consecutive non-finite steps", type=int)

    runtime = parser.add_argument_group("runtime")
    add(runtime, "device", "cpu | cuda | cuda:N (default: cuda when available)")
    add(runtime, "precision", "auto: bf16 autocast on CUDA, else fp32", choices=PRECISIONS)
    switch(runtime, "compile", "torch.compile the model")
    add(runtime, "seed", "random seed (initialisation, data order, dropout)", type=int)

    logging = parser.add_argument_group("logging")
    add(logging, "log-every", "log metrics every N steps", type=int)
    add(logging, "eval-every", "also validate every N steps (default: at epoch ends only)", type=int)
    switch(logging, "use-wandb", 'log to Weights & Biases (pip install "breath[wandb]")')
    add(logging, "wandb-project", "W&B project")
    add(logging, "wandb-name", "W&B run name")

    output = parser.add_argument_group("output")
    add(output, "output-dir", "where checkpoints, history, metrics, plots go")
    add(output, "save-every", "write checkpoint_epochN.pt every N epochs (and after the last)", type=int)


def run_train(options: dict[str, Any], prog: str) -> int:
    """``breath train``: validate everything, prepare data, build the model, train.

    Under torchrun every rank runs it (``breath.train.distributed``): only rank 0 prints, and a
    rank that fails says so as ``rank N: ...`` and exits at once, so that torchrun stops the others.
    """
    dist = Distributed.from_env()
    try:
        with dist.quiet():
            code = _train(options, prog, dist)
    except (ConfigError, DataError, CheckpointError) as exc:
        return dist.fail(f"{prog}: error: {exc}", EXIT_USAGE)
    except SaveError as exc:
        return dist.fail(f"{prog}: error: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        return dist.fail(f"{prog}: stopped at once by a second interrupt; the last saved checkpoint is "
                         "intact", 130)
    except Exception as exc:  # a crash: one process raises it as ever; a rank reports it and stops the others
        if dist.world_size == 1:
            raise
        traceback.print_exc()
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return dist.fail(f"{prog}: error: {type(exc).__name__}: {first_line}", EXIT_FAILED)
    dist.close()
    return code


def _train(options: dict[str, Any], prog: str, dist: Distributed) -> int:
    train_cfg, model_cfg, checkpoint = _configure(options)
    device = dist.start(train_cfg.device)
    autocast = select_precision(train_cfg.precision, device)
    output_dir = Path(train_cfg.output_dir).expanduser()
    if dist.is_main:  # rank 0 writes every file of the run
        prepare_output_dir(output_dir)
    if model_cfg.use_triton is not False and device.type != "cuda":
        say(f"note: --use-triton: no CUDA device ({device}); the reference PyTorch path runs")

    torch.manual_seed(train_cfg.seed)  # the same on every rank: the same model, the same random draws
    bundle, train_set, val_set = dist.main_first(lambda: _load_data(train_cfg, model_cfg))
    model_cfg.vocab_size = bundle.vocab_size
    model = build_model(model_cfg)
    trainer = Trainer(model, model_cfg, train_cfg, train_set, val_set, device, dist)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
    if dist.is_main:
        atomic_write_json(output_dir / "config.json", run_config(train_cfg, model_cfg))
        atomic_copy(bundle.tokenizer_path, output_dir / "tokenizer.json")

    params = model.num_parameters()
    say(f"{model_cfg.arch} model: {params / 1e6:.2f}M parameters (d_model {model_cfg.d_model}, "
        f"{model_cfg.n_layers} layers, {model_cfg.num_heads} heads, n_seq {model_cfg.n_seq}) on {device}, "
        f"{'bf16 autocast' if autocast is not None else 'fp32'}")
    say(f"data: {bundle.corpus_name}, vocab {bundle.vocab_size}, {len(train_set):,} train / "
        f"{len(val_set):,} val windows; {trainer.steps_per_epoch:,} batches of {trainer.global_batch_size}"
        f"{f' ({train_cfg.batch_size} on each of {dist.world_size} ranks)' if dist.world_size > 1 else ''} per "
        f"epoch, {_count(train_cfg.num_epochs, 'epoch')}, {_count(trainer.warmup_steps, 'warmup step')}; "
        f"output {output_dir}")
    wandb_run_id = None
    if checkpoint is not None:
        say(f"resuming {train_cfg.resume} at epoch {trainer.epoch + 1}, step {trainer.global_step}")
        wandb_run_id = checkpoint.get("trainer_state", {}).get("wandb_run_id")
    wandb = None
    if train_cfg.use_wandb and dist.is_main:
        wandb = WandbLog.start(train_cfg.wandb_project, train_cfg.wandb_name,
                               run_config(train_cfg, model_cfg), output_dir, wandb_run_id)
    result = trainer.fit(wandb)
    return _report(result, prog, train_cfg, model_cfg)


def _configure(options: dict[str, Any]) -> tuple[TrainConfig, ModelConfig, dict | None]:
    """Merge the layers of options; the checkpoint of ``--resume`` is loaded (and checked) here."""
    options = dict(options)
    config_file = options.pop("config", None)
    file_options = load_config_file(config_file) if config_file else {}
    resume = options.get("resume", file_options.get("resume"))
    checkpoint = load_checkpoint(resume) if resume else None
    resumed = None
    if checkpoint is not None:  # a resumed run writes next to its checkpoint unless told otherwise
        resumed = {**checkpoint_options(checkpoint["config"]), "output_dir": str(Path(resume).parent)}
    train_cfg, model_cfg = resolve_config(options, file_options, resumed)
    return train_cfg, model_cfg, checkpoint


def _report(result: TrainResult, prog: str, train_cfg: TrainConfig, model_cfg: ModelConfig) -> int:
    """Say how the run ended; return the exit code."""
    resume = f"{prog} --resume {result.checkpoint}"
    if result.status == "interrupted":
        print(f"{prog}: stopped by {signal.Signals(result.signal).name} after step {result.global_step}; "
              f"saved {result.checkpoint}\nresume with: {resume}", file=sys.stderr)
        return SIGNAL_EXIT_CODES[result.signal]
    if result.status == "diverged":
        lr = train_cfg.learning_rate
        print(f"{prog}: error: {train_cfg.max_bad_steps} consecutive steps had a non-finite loss or "
              f"gradient (at step {result.global_step}); the last good state is saved in "
              f"{result.checkpoint}. Try a lower --learning-rate (now {lr:g}) or a higher --base-decay "
              f"(now {model_cfg.base_decay:g}), e.g.: {resume} --learning-rate {lr / 10:g}", file=sys.stderr)
        return EXIT_FAILED
    skipped = f", {result.bad_steps} non-finite steps skipped" if result.bad_steps else ""
    say(f"done: {_count(result.epoch, 'epoch')}, {_count(result.global_step, 'step')}, best val loss "
        f"{result.best_val_loss:.4f}{skipped}; outputs in {train_cfg.output_dir}")
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _load_data(train_cfg: TrainConfig, model_cfg: ModelConfig) -> tuple[Any, WindowDataset, WindowDataset]:
    """prepare_data + windows, with its failures as ``--dataset``/``--n-seq`` errors and its
    vocabulary warning as one note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            bundle = prepare_data(train_cfg.dataset, train_cfg.vocab_size, model_cfg.n_seq,
                                  cache_dir=train_cfg.cache_dir, tokenizer_kind=train_cfg.tokenizer)
        except DataError as exc:
            raise ConfigError("--dataset", str(exc)) from None
        except ValueError as exc:  # a split shorter than one window
            raise ConfigError("--n-seq" if "n_seq" in str(exc) else "--dataset", str(exc)) from None
    for warning in caught:
        say(f"note: --vocab-size: {warning.message}; using {bundle.vocab_size}")
    return bundle, WindowDataset(bundle.train, model_cfg.n_seq), WindowDataset(bundle.val, model_cfg.n_seq)


def inference_command(run: Callable[[dict[str, Any]], None]) -> Callable[[dict, str], int]:
    """eval/generate/export: a bad option or input is one line on stderr and exit code 2."""

    def run_command(options: dict[str, Any], prog: str) -> int:
        try:
            run(options)
        except (ConfigError, DataError, CheckpointError) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except SaveError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print(f"\n{prog}: stopped by SIGINT", file=sys.stderr)
            return 130
        return EXIT_OK

    return run_command


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[dict, str], int]]] = {
    "train": ("train a model on a corpus", add_train_arguments, run_train),
    "eval": ("loss and perplexity of a trained run on a split, and loss by position",
             evaluate.add_arguments, inference_command(evaluate.run)),
    "generate": ("stream text from a trained run", generate.add_arguments, inference_command(generate.run)),
    "export": ("write a run's model as safetensors weights + config.json + tokenizer.json",
               export.add_arguments, inference_command(export.run)),
}


def build_parser(prog: str = "breath") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="Phase 2: Breath of Life - train, evaluate, "
                            "generate with and export the model.", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, add_arguments, _) in COMMANDS.items():
        add_arguments(commands.add_parser(name, help=summary, description=summary, allow_abbrev=False))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``breath COMMAND [options]``; returns the exit code."""
    parser = build_parser()
    try:
        args = vars(parser.parse_args(argv))
    except SystemExit as exc:  # argparse: --help, or a usage error already printed
        return int(exc.code or 0)
    command = args.pop("command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return COMMANDS[command][2](args, f"{parser.prog} {command}")


def train_main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``breath train`` as a program of its own (``scripts/train_phase2.py``): same parser."""
    prog = prog or Path(sys.argv[0]).name
    parser = ArgumentParser(prog=prog, description=COMMANDS["train"][0], allow_abbrev=False)
    add_train_arguments(parser)
    try:
        args = vars(parser.parse_args(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return run_train(args, prog)
