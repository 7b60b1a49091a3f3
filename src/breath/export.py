"""``breath export``: a run's model as weights that cannot run code when loaded.

    breath export checkpoints/phase2 --format safetensors --output exported/phase2

writes into the output directory (default: ``export/`` next to the checkpoint)

    model.safetensors   the parameters, each tensor once (the LM head is tied to the embedding)
    config.json         the ModelConfig fields
    tokenizer.json      the run's tokenizer

and ``breath.load_pretrained(directory)`` (or ``build_model(cfg, weights=".../model.safetensors")``)
rebuilds the model with exactly the checkpoint's function. Optimizer state and training history
stay in the checkpoint.

    breath export checkpoints/phase2 --format hf --output exported/phase2-hf

writes a Hugging Face ``transformers`` directory instead (needs ``pip install 'breath[hf]'``):
``config.json`` (a ``BreathConfig``), ``model.safetensors``, the tokenizer as a
``PreTrainedTokenizerFast`` (``tokenizer.json``, ``tokenizer_config.json``), ``modeling_breath.py``
(one import of ``breath.hf``, for ``trust_remote_code=True`` where ``import breath`` has not run)
and ``lm_eval/``, the lm-evaluation-harness task of the run's corpus's test split
(``breath.lm_eval_tasks``). ``AutoModelForCausalLM.from_pretrained(directory)`` loads it after
``import breath``; ``lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True
--include_path DIR/lm_eval --tasks breath_<dataset>`` scores it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safetensors.torch import save

import breath
from breath.data.corpora import DataError, load_corpus, split_documents
from breath.data.tokenizer import EOT
from breath.io import atomic_copy, atomic_write, atomic_write_json, prepare_output_dir
from breath.models.pretrained import CONFIG_FILE, WEIGHTS_FILE, weights_state_dict
from breath.runs import RUN_ARGUMENT, Run, load_run
from breath.runtime import ConfigError, say

FORMATS = ("safetensors", "hf")
LM_EVAL_DIR = "lm_eval"
LM_EVAL_SPLIT = "test"


def export_safetensors(loaded: Run, output_dir: Path) -> list[Path]:
    """Write ``model.safetensors``, ``config.json`` and ``tokenizer.json`` of ``loaded`` into
    ``output_dir`` (each atomically); returns the paths written."""
    metadata = {"format": "pt", "breath_version": breath.__version__, "source": str(loaded.checkpoint_path),
                "epoch": str(loaded.checkpoint["epoch"]), "best_val_loss": str(loaded.checkpoint["best_val_loss"])}
    data = save(weights_state_dict(loaded.model), metadata=metadata)
    paths = [output_dir / WEIGHTS_FILE, output_dir / CONFIG_FILE, output_dir / "tokenizer.json"]
    atomic_write(paths[0], lambda file: file.write(data))
    atomic_write_json(paths[1], loaded.model.cfg.to_dict())
    atomic_copy(loaded.tokenizer_path, paths[2])
    return paths


def export_hf(loaded: Run, output_dir: Path) -> list[Path]:
    """Write ``loaded`` as a ``transformers`` directory (``save_pretrained``) with its tokenizer,
    the remote-code shim and the lm_eval task of its corpus's test split; returns the paths written."""
    try:
        from breath import hf
        from breath.lm_eval_tasks import write_task
    except ImportError as exc:
        raise ConfigError("--format", f"hf: {exc}") from None
    train = loaded.train_options
    try:  # read (from the data cache) before writing anything
        documents = split_documents(load_corpus(train["dataset"], train["cache_dir"]))[LM_EVAL_SPLIT]
    except DataError as exc:
        raise ConfigError("--format", f"hf: the lm_eval task needs the run's corpus: {exc}") from None
    model = hf.BreathForCausalLM.from_breath(loaded.model)
    model.config.auto_map = hf.AUTO_MAP
    # generate() stops at <|endoftext|>, as breath generate does
    eot = loaded.tokenizer.token_to_id(EOT)
    model.generation_config.update(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    model.save_pretrained(output_dir)
    hf.hf_tokenizer(loaded.tokenizer).save_pretrained(output_dir)
    shim = output_dir / hf.REMOTE_CODE_FILE
    atomic_write(shim, lambda file: file.write(
        b'"""breath\'s own classes (the installed breath package), for trust_remote_code=True."""\n'
        b"from breath.hf import BreathConfig, BreathForCausalLM  # noqa: F401\n"))
    task_files = write_task(output_dir / LM_EVAL_DIR, train["dataset"], LM_EVAL_SPLIT, documents, loaded.tokenizer)
    return sorted(path for path in output_dir.iterdir() if path.is_file()) + task_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar=RUN_ARGUMENT,
                        help="a run's output directory (its best_model.pt) or a checkpoint file")
    parser.add_argument("--format", choices=FORMATS, default="safetensors",
                        help="safetensors (breath.load_pretrained) or hf (transformers' from_pretrained, "
                             "with an lm_eval task; needs breath[hf]) (default: safetensors)")
    parser.add_argument("--output", metavar="DIR",
                        help="output directory (default: export/, or export-hf/ for hf, next to the checkpoint)")


def run(options: dict[str, Any]) -> None:
    """``breath export``: load the run, write the weights, config and tokenizer."""
    loaded = load_run(options["run"])
    hf = options["format"] == "hf"
    default = loaded.directory / ("export-hf" if hf else "export")
    output_dir = prepare_output_dir(options["output"] or default, option="--output")
    paths = export_hf(loaded, output_dir) if hf else export_safetensors(loaded, output_dir)
    parameters = loaded.model.num_parameters()
    say(f"exported {loaded.model.cfg.arch} ({parameters / 1e6:.2f}M parameters) from {loaded.checkpoint_path}: "
        + ", ".join(str(path) for path in paths))
    if hf:
        from breath.lm_eval_tasks import task_name

        say(f"load it with: import breath; transformers.AutoModelForCausalLM.from_pretrained({str(output_dir)!r})")
        say(f"score it with: lm_eval --model hf --model_args pretrained={output_dir},trust_remote_code=True "
            f"--include_path {output_dir / LM_EVAL_DIR} --tasks {task_name(loaded.train_options['dataset'])}")
    else:
        say(f"load it with: breath.load_pretrained({str(output_dir)!r})")
