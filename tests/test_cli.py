"""``breath train`` end to end on real data (the built-in shakespeare corpus at tiny settings):
outputs and their keys, exact resume, bad inputs, signals, W&B offline, non-finite steps.

The first test to need the corpus downloads it into the session cache (tests/conftest.py).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from tokenizers import Tokenizer

from breath import ModelConfig, build_model
from breath.cli import build_parser
from breath.data.corpora import FetchError
from breath.data.windows import prepare_data
from breath.runs import CHECKPOINT_KEYS
from breath.train.checkpoint import save_checkpoint
from breath.train.config import OPTION_TYPES
from breath.train.metrics import read_jsonl

REPO = Path(__file__).resolve().parents[1]
TINY = ["--d-model", "64", "--n-layers", "2", "--num-heads", "2", "--head-dim", "32", "--ffn-dim", "128",
        "--n-seq", "64", "--memory-chunk", "32", "--vocab-size", "512", "--batch-size", "4",
        "--num-train-batches", "3", "--num-val-batches", "2", "--learning-rate", "1e-3", "--log-every", "1"]
HISTORY_KEYS = {"train_losses", "val_losses", "learning_rates", "gamma_history", "snr_history",
                "resonance_history", "stability_history", "best_val_loss", "total_epochs"}
# metrics.jsonl: the diagnostics' own names; W&B: the seed's W&B names (metrics.WANDB_NAMES)
BATCH_KEYS = {"batch/mean_gamma", "batch/std_gamma", "batch/mean_snr", "batch/low_snr_ratio",
              "batch/num_resonant_modes", "batch/total_resonance_energy", "batch/lyapunov_stable_ratio",
              "batch/mean_fast_weight_energy", "batch/mean_effective_gamma", "batch/loss", "batch/lr",
              "batch/tokens_per_sec"}
EPOCH_KEYS = {"train/loss", "val/loss", "train/perplexity", "val/perplexity", "train/mean_gamma",
              "train/mean_snr", "train/num_resonant_modes", "train/lyapunov_stable_ratio",
              "train/mean_effective_gamma"}
WANDB_BATCH_KEYS = {"batch/gamma_mean", "batch/gamma_std", "batch/snr_mean", "batch/snr_low_ratio",
                    "batch/resonant_modes", "batch/resonance_energy", "batch/stability_ratio",
                    "batch/fast_weight_energy", "batch/loss", "batch/lr", "batch/tokens_per_sec"}
WANDB_EPOCH_KEYS = {"train/loss", "val/loss", "train/perplexity", "val/perplexity", "train/gamma_mean",
                    "train/snr_mean", "train/resonant_modes", "train/stability_ratio"}


def messages(stderr: str) -> list[str]:
    """stderr without progress bars and the data module's progress lines."""
    lines = [line.split("\r")[-1] for line in stderr.splitlines()]
    return [line for line in lines if line and not line.startswith(("[breath.data]", "epoch "))]


@pytest.fixture(scope="module")
def run(cache: Path, tmp_path_factory: pytest.TempPathFactory, breath_cli) -> dict:
    output = tmp_path_factory.mktemp("run")
    code, stdout, stderr = breath_cli("train", *TINY, "--num-epochs", "2", "--save-every", "1",
                                      "--cache-dir", str(cache), "--output-dir", str(output))
    assert code == 0, stderr
    return {"dir": output, "stdout": stdout, "stderr": stderr}


@pytest.fixture(scope="module")
def ptb_cache(corpus_cache: Path, breath_cache: Path) -> Path:
    """The real data cache with ptb word-tokenized (the lock is the one tests/test_data.py takes)."""
    with FileLock(str(breath_cache / "ptb.lock")):
        try:
            prepare_data("ptb", 10000, 64, cache_dir=corpus_cache)
        except FetchError as exc:  # only a failed download skips
            pytest.skip(f"offline? cannot fetch the built-in corpus 'ptb': {exc}")
    return corpus_cache


def test_ptb_trains_word_level_and_evaluates_per_word(ptb_cache: Path, tmp_path: Path, breath_cli):
    tiny = [arg for pair in zip(TINY[::2], TINY[1::2]) if pair[0] != "--vocab-size" for arg in pair]
    code, _, stderr = breath_cli("train", *tiny, "--dataset", "ptb", "--num-epochs", "1",
                                 "--cache-dir", str(ptb_cache), "--output-dir", str(tmp_path))
    assert code == 0, stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["train"]["tokenizer"], config["model"]["vocab_size"]) == ("word", 10000)  # ptb's default

    code, out, err = breath_cli("eval", str(tmp_path), "--num-batches", "2", "--output", str(tmp_path / "eval.json"))
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["split_words"] == result["split_tokens"] == 82_430  # one token per word and <eos>
    assert result["word_perplexity"] == pytest.approx(result["perplexity"], rel=1e-12)
    assert f"per-word perplexity {result['word_perplexity']:.2f}" in out

    prompt = "the company said"
    code, out, _ = breath_cli("generate", str(tmp_path), "--prompt", prompt, "--max-new-tokens", "12",
                              "--temperature", "0")
    assert code == 0 and out.startswith(prompt)
    text = out[:-1]  # generate ends the output with a newline of its own
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert len(tokenizer.encode(text[len(prompt):]).ids) == 12  # twelve whole words (or <eos>s)...
    assert tokenizer.decode(tokenizer.encode(text).ids) == text  # ...joined as the tokenizer joins them


def test_outputs_and_their_keys(run):
    out = run["dir"]
    for name in ("best_model.pt", "checkpoint_epoch1.pt", "checkpoint_epoch2.pt", "training_history.json",
                 "config.json", "tokenizer.json", "metrics.jsonl", "loss_curves.png", "diagnostics.png"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # no temporary left behind

    history = json.loads((out / "training_history.json").read_text())
    assert set(history) == HISTORY_KEYS
    assert history["total_epochs"] == 2 and len(history["val_losses"]) == 2
    assert history["best_val_loss"] == min(history["val_losses"])
    assert set(history["gamma_history"][0]) == {"mean_gamma", "std_gamma", "min_gamma", "max_gamma",
                                                "mean_effective_gamma"}
    assert set(history["stability_history"][0]) == {"lyapunov_stable_ratio", "mean_fast_weight_energy"}
    assert all(isinstance(v, float) for entry in history["gamma_history"] for v in entry.values())

    config = json.loads((out / "config.json").read_text())
    assert config["model"]["d_model"] == 64 and config["train"]["num_train_batches"] == 3
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == config["model"]["vocab_size"]


def test_checkpoint_loads_as_the_docs_show(run):
    # docs/training.md, "Loading a checkpoint", as written:
    checkpoint = torch.load(run["dir"] / "best_model.pt", weights_only=True)
    model = build_model(ModelConfig.from_dict(checkpoint["config"]["model"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    assert set(CHECKPOINT_KEYS) <= set(checkpoint)
    assert checkpoint["best_val_loss"] == min(checkpoint["val_losses"])
    model.eval()
    ids = torch.tensor([Tokenizer.from_file(str(run["dir"] / "tokenizer.json")).encode("To be, or not").ids])
    assert model(ids).logits.shape == (1, ids.shape[1], checkpoint["config"]["model"]["vocab_size"])
    last = torch.load(run["dir"] / "checkpoint_epoch2.pt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6)


def test_validation_loss_is_what_breath_eval_reports(run, tmp_path, breath_cli):
    """The trainer's validation and ``breath eval`` share one loss (breath.loss): the run's best val
    loss is ``breath eval --split val`` of its best_model.pt on the same windows (the run validated
    on the first 2 batches of 4: --num-val-batches 2, --batch-size 4)."""
    best = json.loads((run["dir"] / "training_history.json").read_text())["best_val_loss"]
    code, _, err = breath_cli("eval", str(run["dir"]), "--split", "val", "--num-batches", "2",
                              "--output", str(tmp_path / "eval_val.json"))
    assert code == 0, err
    result = json.loads((tmp_path / "eval_val.json").read_text())
    assert (result["windows"], result["batch_size"]) == (8, 4)
    assert result["loss"] == pytest.approx(best, rel=1e-9, abs=0)


def test_metrics_and_console(run):
    records = read_jsonl(run["dir"] / "metrics.jsonl")
    steps = [r for r in records if "batch/loss" in r]
    epochs = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all(BATCH_KEYS <= set(r) for r in steps)
    assert len(epochs) == 2 and all(EPOCH_KEYS <= set(r) for r in epochs)
    assert epochs[0]["train/perplexity"] == pytest.approx(math.exp(epochs[0]["train/loss"]))
    stdout = run["stdout"]
    for section in ("Epoch 2/2", "Loss", "val", "peak VRAM", "Γ forgetting", "SNR", "low-SNR ratio",
                    "Resonance", "energy", "Lyapunov stable ratio", "fast-weight energy"):
        assert section in stdout, section
    assert stdout.count("the reference PyTorch path runs") == (0 if torch.cuda.is_available() else 1)
    assert "loss=" in run["stderr"] and "Γ=" in run["stderr"]  # the progress bar's postfix


def test_resume_continues_exactly(run, tmp_path, breath_cli):
    code, stdout, stderr = breath_cli("train", "--resume", str(run["dir"] / "checkpoint_epoch1.pt"),
                                      "--output-dir", str(tmp_path))
    assert code == 0, stderr
    assert "resuming" in stdout and "epoch 2, step 3" in stdout
    losses = {r["step"]: r["batch/loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "batch/loss" in r}
    expected = {r["step"]: r["batch/loss"] for r in read_jsonl(run["dir"] / "metrics.jsonl") if "batch/loss" in r}
    assert losses == {step: expected[step] for step in (4, 5, 6)}  # steps 1-3 were the checkpoint's
    assert (json.loads((tmp_path / "training_history.json").read_text())
            == json.loads((run["dir"] / "training_history.json").read_text()))


def test_transformer_has_no_diagnostics_and_still_trains(cache, tmp_path, breath_cli):
    code, stdout, stderr = breath_cli("train", *TINY, "--arch", "transformer", "--num-epochs", "1",
                                      "--cache-dir", str(cache), "--output-dir", str(tmp_path))
    assert code == 0, stderr
    assert "Γ forgetting" not in stdout and (tmp_path / "loss_curves.png").is_file()
    assert not (tmp_path / "diagnostics.png").exists()
    history = json.loads((tmp_path / "training_history.json").read_text())
    assert history["gamma_history"] == [dict.fromkeys(("mean_gamma", "std_gamma", "min_gamma", "max_gamma",
                                                       "mean_effective_gamma"))]


def test_no_consolidation_trains_and_reports_only_gamma(cache, tmp_path, breath_cli):
    """--no-consolidation: the memory without its consolidation trains; Γ is reported, and the
    diagnostics of the consolidation (SNR, resonance, stability) are absent, not NaN."""
    code, stdout, stderr = breath_cli("train", *TINY, "--no-consolidation", "--num-epochs", "1",
                                      "--cache-dir", str(cache), "--output-dir", str(tmp_path))
    assert code == 0, stderr
    assert "Γ forgetting" in stdout and "SNR" not in stdout and "Lyapunov" not in stdout
    epoch = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r][-1]
    assert math.isfinite(epoch["train/mean_gamma"]) and "train/mean_snr" not in epoch
    saved = torch.load(tmp_path / "best_model.pt", weights_only=True)
    assert saved["config"]["model"]["consolidation"] is False


def test_raising_base_decay_raises_the_stable_ratio(cache, tmp_path, breath_cli):
    # The seed's advice "stable ratio below 90%: increase --base-decay", through the command line.
    # TINY's chunk is 32: base_decay ≥ ln(3)/64 = 0.0172 makes every chunk stable (tolerance 1.5);
    # at 0.001 the memory barely dissipates and the first chunk of every window is flagged.
    ratios = []
    for base_decay in ("0.001", "0.02"):
        out = tmp_path / base_decay
        code, _, stderr = breath_cli("train", *TINY, "--num-epochs", "1", "--base-decay", base_decay,
                                     "--cache-dir", str(cache), "--output-dir", str(out))
        assert code == 0, stderr
        ratios.append([r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r][-1]["train/lyapunov_stable_ratio"])
    assert ratios[0] < 0.9 and ratios[1] == 1.0


def test_files_of_older_versions_read_with_todays_names(tmp_path):
    from breath.train.trainer import OLD_HISTORY_FIELDS, HISTORY_FIELDS

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "batch/gamma_mean": 0.02,
                                                        "train/stability_ratio": 0.5, "batch/loss": 3.0}) + "\n")
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "batch/mean_gamma": 0.02,
                                                       "train/lyapunov_stable_ratio": 0.5, "batch/loss": 3.0}]
    for key, old in OLD_HISTORY_FIELDS.items():
        assert set(old.values()) <= set(HISTORY_FIELDS[key])


# ------------------------------------------------------------------------------------- bad inputs


def bad_files(tmp: Path, run_dir: Path) -> dict[str, Path]:
    files = {"yaml": tmp / "bad.yaml", "unknown": tmp / "unknown.yaml", "type": tmp / "type.json",
             "txt": tmp / "options.txt", "truncated": tmp / "truncated.pt", "garbage": tmp / "garbage.pt",
             "foreign": tmp / "foreign.pt", "empty_dir": tmp / "empty", "a_file": tmp / "a_file"}
    files["yaml"].write_text("batch_size: [1, 2\n")
    files["unknown"].write_text("learning_rat: 0.1\n")
    files["type"].write_text('{"batch_size": "four"}')
    files["txt"].write_text("batch_size=4")
    blob = (run_dir / "best_model.pt").read_bytes()
    files["truncated"].write_bytes(blob[: len(blob) // 3])
    files["garbage"].write_bytes(b"\x00" * 1000)
    save_checkpoint(files["foreign"], {"state_dict": {"w": torch.ones(2)}})
    files["empty_dir"].mkdir()
    files["a_file"].write_text("not a directory")
    return files


# (arguments, text the one-line message must contain: the option, then the bad value)
BAD_INPUTS = [  # "ARGS => OPTION: WHAT THE MESSAGE QUOTES"
    "--batch-size 0 => --batch-size: 0",
    "--batch-size -3 => --batch-size: -3",
    "--batch-size four => --batch-size: four",
    "--num-epochs 0 => --num-epochs: 0",
    "--learning-rate 0 => --learning-rate: 0",
    "--learning-rate=-1e-3 => --learning-rate: -0.001",
    "--learning-rate nan => --learning-rate: nan",
    "--weight-decay -0.1 => --weight-decay: -0.1",
    "--gradient-clip-norm 0 => --gradient-clip-norm: 0",
    "--warmup-steps -1 => --warmup-steps: -1",
    "--min-lr-ratio 2 => --min-lr-ratio: 2",
    "--max-bad-steps 0 => --max-bad-steps: 0",
    "--num-train-batches 0 => --num-train-batches: 0",
    "--num-val-batches -2 => --num-val-batches: -2",
    "--log-every 0 => --log-every: 0",
    "--eval-every 0 => --eval-every: 0",
    "--save-every 0 => --save-every: 0",
    "--seed -5 => --seed: -5",
    "--vocab-size 100 => --vocab-size: 100",
    "--d-model 0 => --d-model: 0",
    "--d-model 63 => --d-model: 63",
    "--n-layers 0 => --n-layers: 0",
    "--n-seq -64 => --n-seq: -64",
    "--num-heads 0 => --num-heads: 0",
    "--head-dim 33 => --head-dim: 33",
    "--ffn-dim 0 => --ffn-dim: 0",
    "--dropout 1.0 => --dropout: 1.0",
    "--memory-chunk 0 => --memory-chunk: 0",
    "--memory-chunk 128 => --memory-chunk: 128",  # longer than --n-seq 64
    "--base-decay 0 => --base-decay: 0",
    "--base-decay -0.01 => --base-decay: -0.01",
    "--hebbian-eta 0 => --hebbian-eta: 0",
    "--snr-threshold -1 => --snr-threshold: -1",
    "--resonance-threshold 1.5 => --resonance-threshold: 1.5",
    "--gamma-boost 0.5 => --gamma-boost: 0.5",
    "--lyapunov-tolerance 0.5 => --lyapunov-tolerance: 0.5",
    "--preset huge => --preset: huge",
    "--arch rnn => --arch: rnn",
    "--use-triton yes => --use-triton: yes",
    "--use-triton on --device cpu => --use-triton: 'on' but the device is cpu",
    "--use-triton on --resolvent full => --use-triton: resolvent='full'",
    "--precision fp8 => --precision: fp8",
    "--precision bf16 --device cpu => --precision: bf16",
    "--device tpu => --device: tpu",
    "--dataset {tmp}/missing.txt => --dataset: missing.txt",
    "--dataset {empty_dir} => --dataset: empty",
    "--batch-size 100000 => --batch-size: 100000",  # more than the train split's windows
    "--n-seq 1000000 --memory-chunk 64 => --n-seq: 1000000",  # longer than a split
    "--output-dir {a_file}/sub => --output-dir: a_file/sub",
    "--config {tmp}/missing.yaml => --config: missing.yaml",
    "--config {yaml} => --config: bad.yaml",
    "--config {unknown} => --config: learning_rat",
    "--config {type} => --batch-size: four",
    "--config {txt} => --config: options.txt",
    "--resume {tmp}/missing.pt => --resume: missing.pt",
    "--resume {truncated} => --resume: truncated.pt",
    "--resume {garbage} => --resume: garbage.pt",
    "--resume {foreign} => --resume: missing key",
    "--resume {best} --d-model 96 => --resume: 96) in the model",
    "--resume {best} --arch phase1 => --resume: another --arch",
    "--no-such-flag 1 => --no-such-flag: unrecognized",
]


if not torch.cuda.is_available():
    BAD_INPUTS.append("--device cuda => --device: cuda")


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.partition(" => ")[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_naming_option_and_value(case, run, cache, tmp_path, breath_cli):
    given, _, expected = case.partition(" => ")
    option, _, value = expected.partition(": ")
    paths = {"tmp": tmp_path, "best": run["dir"] / "best_model.pt", **bad_files(tmp_path, run["dir"])}
    args = [a.format(**paths) for a in shlex.split(given)]
    code, stdout, stderr = breath_cli("train", *TINY, "--cache-dir", str(cache), "--output-dir", str(tmp_path / "out"),
                                      *args)
    lines = messages(stderr)
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith(("breath train: error: ", "breath: error: ")), stderr
    assert option in lines[0] and value in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out" / "metrics.jsonl").exists()  # refused before any work


def run_cli(args: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=120, **kwargs)


def test_entry_points_share_one_parser_and_fail_cleanly(tmp_path):
    module = run_cli(["-m", "breath", "train", "--help"])
    script = run_cli(["scripts/train_phase2.py", "--help"])
    assert module.returncode == script.returncode == 0
    flags = {word.strip(",[]") for word in module.stdout.split() if word.startswith(("--", "[--"))}
    assert flags == {word.strip(",[]") for word in script.stdout.split() if word.startswith(("--", "[--"))}
    assert {f"--{name.replace('_', '-')}" for name in OPTION_TYPES} | {"--config", "--help"} <= flags

    bad = run_cli(["scripts/train_phase2.py", "--learning-rate", "-1", "--output-dir", str(tmp_path)])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "python scripts/train_phase2.py: error: --learning-rate: got -1.0; allowed: a finite number > 0"]
    usage = run_cli(["-m", "breath", "train", "--batch-size", "x"])
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    assert run_cli(["-m", "breath"]).returncode == 2  # no command: help, exit 2


def train_parser():
    return build_parser()._subparsers._group_actions[0].choices["train"]


def test_every_option_is_a_flag():
    dests = {action.dest for action in train_parser()._actions} - {"help"}
    assert dests == set(OPTION_TYPES) | {"config", "preset"}


# The seed's command-line options (its quick reference) with their defaults: a flag given alone is
# True (for --use-triton that is auto, "Triton where it runs", its default), absent is the default.
SEED_FLAGS = {
    "--preset": None, "--vocab-size": 10000, "--d-model": 512, "--n-layers": 6, "--n-seq": 512,
    "--num-heads": 8, "--head-dim": 64, "--batch-size": 4, "--num-epochs": 10, "--learning-rate": 1e-4,
    "--weight-decay": 0.01, "--gradient-clip-norm": 1.0, "--use-triton": "auto", "--base-decay": 0.01,
    "--hebbian-eta": 0.1, "--snr-threshold": 2.0, "--resonance-threshold": 0.1, "--use-wandb": False,
    "--wandb-project": "phase2-breath-of-life", "--wandb-name": None, "--device": None,
    "--num-train-batches": None, "--num-val-batches": None,
}


def test_the_seeds_flags_keep_their_names_and_defaults():
    from breath.train.config import resolve_config

    options = {s for action in train_parser()._actions for s in action.option_strings}
    assert set(SEED_FLAGS) <= options
    train_cfg, model_cfg = resolve_config({})
    settings = {**model_cfg.to_dict(), **train_cfg.to_dict()}
    for flag, default in SEED_FLAGS.items():
        if flag != "--preset":
            assert settings[flag[2:].replace("-", "_")] == default, flag
    # the seed's switches, given alone
    given = vars(train_parser().parse_args(["--use-triton", "--use-wandb", "--preset", "small"]))
    assert given == {"use_triton": "auto", "use_wandb": True, "preset": "small"}
    assert vars(train_parser().parse_args(["--use-triton", "on"])) == {"use_triton": "on"}


def test_docs_option_table_is_the_generated_one():
    from breath.cli import flag_table

    docs = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    start = docs.index("<!-- flag table: generated by breath.cli.flag_table() -->\n") + len(
        "<!-- flag table: generated by breath.cli.flag_table() -->\n")
    table = docs[start:docs.index("\n<!-- end of flag table -->")]
    assert table == flag_table(), 'regenerate: python -c "from breath.cli import flag_table; print(flag_table())"'
    for action in train_parser()._actions:  # every flag of the parser is in it
        assert action.dest == "help" or f"`{action.option_strings[0]}" in table or \
            f"`--[no-]{action.option_strings[0][2:]}`" in table, action.option_strings


# ---------------------------------------------------------------------------------- interruptions


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_checkpoint_interrupted(cache, tmp_path, signum, code, breath_cli):
    child = subprocess.Popen(
        [sys.executable, "-m", "breath", "train", *TINY, "--num-train-batches", "1000", "--num-epochs", "1",
         "--cache-dir", str(cache), "--output-dir", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.2)
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == code, stderr
    checkpoint = torch.load(tmp_path / "checkpoint_interrupted.pt", weights_only=True)
    assert checkpoint["global_step"] >= 2
    assert checkpoint["trainer_state"]["batch_in_epoch"] == checkpoint["global_step"]
    hint = f"resume with: breath train --resume {tmp_path / 'checkpoint_interrupted.pt'}"
    assert signal.Signals(signum).name in stderr and hint in stderr and "Traceback" not in stderr

    # The hint works; the resumed run writes next to its checkpoint (here: one more batch, then the epoch ends).
    step = checkpoint["global_step"]
    code, stdout, stderr = breath_cli("train", "--resume", str(tmp_path / "checkpoint_interrupted.pt"),
                                      "--num-train-batches", str(step + 1))
    assert code == 0, stderr
    assert f"epoch 1, step {step}" in stdout
    assert torch.load(tmp_path / "checkpoint_epoch1.pt", weights_only=True)["global_step"] == step + 1


def test_non_finite_run_stops_with_checkpoint_and_remedy(cache, tmp_path, monkeypatch, breath_cli):
    monkeypatch.setattr("breath.train.trainer.F.cross_entropy", lambda logits, *a, **k: logits.sum() * math.nan)
    code, _, stderr = breath_cli("train", *TINY, "--num-epochs", "1", "--max-bad-steps", "2",
                                 "--cache-dir", str(cache), "--output-dir", str(tmp_path))
    assert code == 1
    [line] = messages(stderr)
    assert "2 consecutive steps had a non-finite loss" in line
    assert "--learning-rate (now 0.001" in line and "--base-decay (now 0.01)" in line
    assert f"--resume {tmp_path / 'checkpoint_diverged.pt'}" in line
    checkpoint = torch.load(tmp_path / "checkpoint_diverged.pt", weights_only=True)
    assert checkpoint["global_step"] == 2 and checkpoint["trainer_state"]["bad_steps"] == 2
    assert checkpoint["optimizer_state_dict"]["state"] == {}  # no update was ever applied


# ------------------------------------------------------------------------------------------- W&B


def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline W&B run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending, rows = run_file.read_bytes(), 32768, 7, b"", []  # 7: the file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_wandb_offline_logs_the_seeds_keys(cache, tmp_path, monkeypatch, breath_cli):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    code, _, stderr = breath_cli("train", *TINY, "--num-epochs", "1", "--use-wandb", "--wandb-name", "ci",
                                 "--cache-dir", str(cache), "--output-dir", str(tmp_path))
    assert code == 0, stderr
    [run_file] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    # W&B's writer is a separate service process: on a loaded machine its last blocks can land
    # shortly after finish() returns (seen once in CI-like load), so give it a bounded moment.
    deadline = time.monotonic() + 20
    while len(rows := wandb_history(run_file)) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [row["_step"] for row in rows] == [1, 2, 3]
    assert all(WANDB_BATCH_KEYS <= set(row) for row in rows)
    assert WANDB_EPOCH_KEYS <= set(rows[-1])  # the epoch's metrics share its last step
    metrics = {r["step"]: r["batch/loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "batch/loss" in r}
    assert {row["_step"]: row["batch/loss"] for row in rows} == pytest.approx(metrics)
    assert torch.load(tmp_path / "checkpoint_epoch1.pt", weights_only=True)["trainer_state"]["wandb_run_id"]
