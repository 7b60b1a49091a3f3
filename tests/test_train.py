"""Training components: configuration merging, schedule, optimizer groups, metric accumulation,
atomic and safe checkpoints (with fault injection), non-finite steps, exact resume.

These run on synthetic tokens (no download); the command line on real data is in test_cli.py.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from breath.errors import FieldError
from breath.io import SaveError, atomic_write
from breath.models import ModelConfig, build_model
from breath.models.config import PRESETS
from breath.runs import CHECKPOINT_KEYS, CheckpointError, check_compatible, load_checkpoint
from breath.runtime import ConfigError
from breath.train import checkpoint as ckpt
from breath.train.checkpoint import save_checkpoint
from breath.train.config import TrainConfig, checkpoint_options, load_config_file, resolve_config
from breath.train.metrics import MetricAccumulator, WandbLog, read_jsonl
from breath.train.trainer import Trainer, build_optimizer, warmup_cosine

TINY = dict(d_model=32, n_layers=1, num_heads=2, head_dim=16, ffn_dim=64, n_seq=32, memory_chunk=16,
            vocab_size=300, batch_size=2, num_epochs=2, num_train_batches=3, num_val_batches=2,
            log_every=1, learning_rate=3e-3, warmup_steps=1)


@pytest.fixture
def tiny_trainer(tiny_trainer):
    """The shared tiny trainer with this module's batches, logging and schedule (TINY)."""
    return lambda output_dir, **overrides: tiny_trainer(output_dir, **{**TINY, **overrides})


def step_losses(output_dir) -> dict[int, float]:
    return {r["step"]: r["batch/loss"] for r in read_jsonl(output_dir / "metrics.jsonl") if "batch/loss" in r}


# ------------------------------------------------------------------------------------------ config


def test_defaults_are_the_seeds():
    train_cfg, model_cfg = resolve_config({})
    assert (model_cfg.d_model, model_cfg.n_layers, model_cfg.n_seq, model_cfg.num_heads, model_cfg.head_dim) == (
        512, 6, 512, 8, 64)
    assert (train_cfg.vocab_size, train_cfg.batch_size, train_cfg.num_epochs, train_cfg.learning_rate,
            train_cfg.weight_decay, train_cfg.gradient_clip_norm, train_cfg.save_every) == (
        10000, 4, 10, 1e-4, 0.01, 1.0, 5)
    assert (model_cfg.base_decay, model_cfg.hebbian_eta, model_cfg.snr_threshold,
            model_cfg.resonance_threshold) == (0.01, 0.1, 2.0, 0.1)
    assert train_cfg.output_dir == "checkpoints/phase2" and train_cfg.wandb_project == "phase2-breath-of-life"


def test_layers_merge_preset_then_file_then_flags(tmp_path):
    config = tmp_path / "run.yaml"
    # YAML 1.1 reads 3e-4 as a string: the file loader must still give a float.
    config.write_text("n-seq: 128\nlearning_rate: 3e-4\nd_model: 384\nuse_wandb: true\n")
    train_cfg, model_cfg = resolve_config({"d_model": 192, "preset": "small"}, load_config_file(str(config)))
    assert model_cfg.n_seq == 128  # file over preset (512)
    assert model_cfg.d_model == 192  # flag over file over preset
    assert model_cfg.n_layers == PRESETS["small"]["n_layers"]  # preset over defaults
    assert train_cfg.learning_rate == 3e-4 and isinstance(train_cfg.learning_rate, float)
    assert train_cfg.use_wandb is True


def test_resumed_options_sit_under_preset_file_and_flags():
    resumed = checkpoint_options({"model": {"d_model": 96, "n_seq": 64, "vocab_size": 999},
                                  "train": {"num_epochs": 7, "resume": "old.pt", "batch_size": 3}})
    assert "vocab_size" not in resumed and "resume" not in resumed  # the request is a train option
    train_cfg, model_cfg = resolve_config({"batch_size": 5}, resumed=resumed)
    assert (model_cfg.d_model, model_cfg.n_seq, train_cfg.num_epochs, train_cfg.batch_size) == (96, 64, 7, 5)
    _, model_cfg = resolve_config({"preset": "small"}, resumed=resumed)
    assert model_cfg.d_model == PRESETS["small"]["d_model"]


def test_a_runs_config_json_can_be_reused(tmp_path):
    train_cfg, model_cfg = resolve_config({**TINY, "num_epochs": 4})
    model_cfg.vocab_size = 290  # the tokenizer's actual size: not a request
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": model_cfg.to_dict(), "train": train_cfg.to_dict()}))
    again_train, again_model = resolve_config({}, load_config_file(str(path)))
    assert again_train == train_cfg and again_train.vocab_size == 300
    assert again_model.d_model == model_cfg.d_model and again_model.n_seq == model_cfg.n_seq


def test_use_triton_is_auto_on_or_off_in_flags_and_files_and_old_files_load(tmp_path):
    assert resolve_config({})[1].use_triton == "auto"  # the ops choose: Triton where it runs
    assert resolve_config({"use_triton": "on"})[1].use_triton == "on"
    yaml_file = tmp_path / "run.yaml"
    for text, mode in [("use_triton: on", "on"), ("use_triton: off", "off"), ("use-triton: auto", "auto"),
                       ("use_triton: true", "auto"), ("use_triton: false", "off"), ("use_triton:", "auto")]:
        yaml_file.write_text(text + "\nuse_wandb: on\n")  # YAML 1.1's on: a word here, still true for a switch
        options = load_config_file(str(yaml_file))
        assert (options["use_triton"], options["use_wandb"]) == (mode, True), text
    # a run's config.json of before: use_triton null (the command line's --use-triton) or false, and a preset
    train_cfg, model_cfg = resolve_config({**TINY})
    old = {"model": {**model_cfg.to_dict(), "use_triton": None}, "train": {**train_cfg.to_dict(), "preset": None}}
    for saved, mode in [(None, "auto"), (False, "off")]:
        old["model"]["use_triton"] = saved
        (tmp_path / "config.json").write_text(json.dumps(old))
        assert resolve_config({}, load_config_file(str(tmp_path / "config.json")))[1].use_triton == mode
        assert ModelConfig.from_dict(old["model"]).use_triton == mode
    with pytest.raises(ConfigError, match=r"^--use-triton: got 'yes'; allowed: auto \| on \| off$"):
        yaml_file.write_text("use_triton: 'yes'\n")
        resolve_config({}, load_config_file(str(yaml_file)))


@pytest.mark.parametrize("options, option", [
    ({"head_dim": 15}, "--head-dim"),
    ({"memory_chunk": 128, "n_seq": 64}, "--memory-chunk"),
    ({"min_lr_ratio": -0.5}, "--min-lr-ratio"),
    ({"preset": "tiny"}, "--preset"),
])
def test_resolve_config_errors_name_the_option(options, option):
    with pytest.raises(ConfigError) as info:
        resolve_config(options)
    assert info.value.option == option and str(info.value).startswith(option)


def test_every_train_option_is_validated():
    for name, bad in [("batch_size", 0), ("learning_rate", math.inf), ("gradient_clip_norm", -1.0),
                      ("device", "gpu"), ("precision", "fp16"), ("seed", -1), ("dataset", " ")]:
        with pytest.raises(FieldError, match=f"^{name}: got {bad!r}"):
            TrainConfig(**{name: bad}).validate()
        with pytest.raises(ConfigError, match=f"^--{name.replace('_', '-')}: got {bad!r}"):
            resolve_config({name: bad})


# --------------------------------------------------------------------------------- optimisation


def test_warmup_cosine_schedule():
    lrs = [warmup_cosine(step, warmup_steps=10, total_steps=110, min_ratio=0.1) for step in range(120)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # linear warmup up to the peak
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then monotone cosine decay
    assert lrs[60] == pytest.approx(0.55)  # halfway: the mean of peak and floor
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_embeddings():
    _, model_cfg = resolve_config(TINY)
    model = build_model(model_cfg)
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert optimizer.param_groups[0]["weight_decay"] == 0.1 and optimizer.param_groups[1]["weight_decay"] == 0
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, (nn.Embedding, nn.LayerNorm)) or name == "bias":
                assert id(param) not in decayed, f"{type(module).__name__}.{name} is decayed"
    assert any(isinstance(m, nn.Linear) and id(m.weight) in decayed for m in model.modules())
    grouped = sum(len(g["params"]) for g in optimizer.param_groups)
    assert grouped == len(list(model.parameters()))


def test_metric_accumulator_means_extremes_nan_and_state():
    acc = MetricAccumulator()
    for loss, low, layer in [(2.0, 0.5, [1.0, math.nan]), (4.0, 0.25, [3.0, 2.0]), (math.nan, 0.1, [5.0, 4.0])]:
        acc.add({"loss": torch.tensor(loss), "min_gamma": torch.tensor(low),
                 "per_layer/mean_snr": torch.tensor(layer)})
    restored = MetricAccumulator()
    restored.load_state_dict(acc.state_dict(), torch.device("cpu"))
    for stats in (acc.read(), restored.read()):
        assert stats["loss"] == 3.0  # the NaN is left out
        assert stats["min_gamma"] == pytest.approx(0.1)
        assert stats["per_layer/mean_snr"] == [3.0, 3.0]
    acc.reset()
    assert acc.read() == {} and not acc


# ---------------------------------------------------------------------------------- checkpoints


def test_atomic_write_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, lambda f: f.write(b"old"))

    def failing(file):
        file.write(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SaveError, match="disk is full"):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary left behind


def test_disk_full_during_checkpoint_save(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_epoch1.pt"
    save_checkpoint(path, {"weights": torch.ones(3)})

    def full_disk(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(SaveError, match="the disk is full.*intact"):
        save_checkpoint(path, {"weights": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(3))


_KILL_MID_SAVE = textwrap.dedent("""
    import os, sys, time, torch
    from breath.io import atomic_write
    from breath.train.checkpoint import save_checkpoint
    path, where = sys.argv[1], sys.argv[2]
    save_checkpoint(path, {"version": torch.tensor(1), "weights": torch.ones(100_000)})
    def stall(*args):
        print("saving", flush=True)
        time.sleep(60)
    if where == "writing":  # killed with part of the new bytes written
        def writer(file):
            file.write(os.urandom(200_000))
            stall()
        atomic_write(path, writer)
    else:  # killed with the new file complete but not yet renamed into place
        os.fsync = stall
        save_checkpoint(path, {"version": torch.tensor(2), "weights": torch.zeros(100_000)})
""")


@pytest.mark.parametrize("where", ["writing", "before-rename"])
def test_sigkill_mid_save_leaves_the_previous_checkpoint(tmp_path, where):
    path = tmp_path / "checkpoint.pt"
    child = subprocess.Popen([sys.executable, "-c", _KILL_MID_SAVE, str(path), where],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "saving"
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    state = torch.load(path, weights_only=True)
    assert int(state["version"]) == 1 and torch.equal(state["weights"], torch.ones(100_000))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_checkpoint_rejects_bad_files(tmp_path):
    good = {key: 0 for key in CHECKPOINT_KEYS}
    save_checkpoint(tmp_path / "good.pt", good)
    blob = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "garbage.pt").write_bytes(os.urandom(4096))
    torch.save({**good, "payload": _Evil()}, tmp_path / "unsafe.pt")
    with open(tmp_path / "pickled.pt", "wb") as f:
        pickle.dump(good, f)
    save_checkpoint(tmp_path / "incomplete.pt", {k: v for k, v in good.items() if k != "optimizer_state_dict"})
    cases = {
        "missing.pt": "does not exist",
        "truncated.pt": "truncated or corrupt",
        "garbage.pt": "truncated or corrupt",
        "unsafe.pt": "objects other than tensors",
        "incomplete.pt": "missing key 'optimizer_state_dict'",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=f"^--resume: .*{name}.*{message}"):
            load_checkpoint(tmp_path / name)
    assert set(load_checkpoint(tmp_path / "good.pt")) == set(CHECKPOINT_KEYS)
    with pytest.raises(CheckpointError, match="--resume"):  # a plain pickle is not a torch file
        load_checkpoint(tmp_path / "pickled.pt")


def test_check_compatible_names_the_differing_key():
    _, small_cfg = resolve_config(TINY)
    _, wide_cfg = resolve_config({**TINY, "ffn_dim": 48})
    state = build_model(small_cfg).state_dict()
    with pytest.raises(CheckpointError, match=r"'blocks\.0\.[\w.]+' has shape \(\d+, \d+\) in the checkpoint"):
        check_compatible(state, build_model(wide_cfg))
    _, transformer_cfg = resolve_config({**TINY, "arch": "transformer"})
    with pytest.raises(CheckpointError, match="another --arch"):
        check_compatible(state, build_model(transformer_cfg))


def test_wandb_missing_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    assert WandbLog.start("p", None, {}, tmp_path) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "breath[wandb]"' in err


# ------------------------------------------------------------------------------------- trainer


def test_checkpoint_holds_only_safe_types_and_the_seeds_keys(tmp_path, tiny_trainer):
    trainer = tiny_trainer(tmp_path, num_epochs=1, save_every=1)
    assert trainer.fit().status == "completed"
    state = torch.load(tmp_path / "checkpoint_epoch1.pt", weights_only=True)
    assert set(CHECKPOINT_KEYS) <= set(state)
    assert state["epoch"] == 1 and state["global_step"] == 3
    assert state["config"]["model"]["d_model"] == TINY["d_model"]
    assert len(state["train_losses"]) == len(state["val_losses"]) == len(state["gamma_history"]) == 1


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tmp_path, monkeypatch, tiny_trainer):
    # No dropout: the replay below skips the bad steps' forward passes and their random draws.
    trainer = tiny_trainer(tmp_path, max_bad_steps=3, num_train_batches=5, dropout=0.0)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real_cross_entropy = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, labels, **kwargs):  # training losses 2 and 3 are NaN, then all from 5 on
        loss = real_cross_entropy(logits, labels, **kwargs)
        if kwargs.get("reduction") == "none":  # validation (breath.loss) stays finite
            return loss
        calls["n"] += 1
        return loss * math.nan if calls["n"] in (2, 3) or calls["n"] >= 5 else loss

    monkeypatch.setattr("breath.train.trainer.F.cross_entropy", poisoned)
    result = trainer.fit()
    # Steps 2, 3 skipped (2 < 3 in a row), step 4 trains, steps 5, 6, 7 skipped: stop after step 7.
    assert result.status == "diverged" and result.global_step == 7 and result.bad_steps == 5
    saved = load_checkpoint(result.checkpoint)
    assert saved["trainer_state"]["consecutive_bad_steps"] == 3
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["batch/bad_steps"] for r in records if "batch/bad_steps" in r][:4] == [0, 1, 2, 2]
    assert "batch/loss" not in [r for r in records if r["step"] == 2][0]  # nothing finite to log

    # A skipped step leaves the weights alone: only steps 1 and 4 changed them.
    monkeypatch.undo()
    replay = tiny_trainer(tmp_path / "replay", max_bad_steps=3, num_train_batches=5, dropout=0.0)
    assert all(torch.equal(initial[k], v) for k, v in replay.model.state_dict().items())
    batches = list(replay._batches())
    replay._train_step(*batches[0])
    replay._train_step(*batches[3])
    for key, value in replay.model.state_dict().items():
        assert torch.equal(value, saved["model_state_dict"][key]), key


@pytest.mark.parametrize("patience, epochs_run", [(None, 6), (3, 5), (4, 6)])
def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path, monkeypatch, patience,
                                                                       epochs_run, tiny_trainer):
    scripted = iter([3.0, 2.0, 2.5, 2.4, 2.6, 1.0])  # the best is epoch 2 until epoch 6
    trainer = tiny_trainer(tmp_path, num_epochs=6, num_train_batches=1, early_stopping_patience=patience)
    monkeypatch.setattr(trainer, "evaluate", lambda: next(scripted))
    result = trainer.fit()
    assert result.status == "completed" and result.epoch == epochs_run
    assert trainer.history["val_losses"] == [3.0, 2.0, 2.5, 2.4, 2.6, 1.0][:epochs_run]
    best = load_checkpoint(tmp_path / "best_model.pt")
    assert best["epoch"] == (6 if epochs_run == 6 else 2) and best["best_val_loss"] == result.best_val_loss


def test_early_stopping_patience_is_validated():
    with pytest.raises(FieldError, match="early_stopping_patience: got 0"):
        TrainConfig(early_stopping_patience=0).validate()


def _interrupt_after(monkeypatch, steps: int) -> None:
    """Deliver a real SIGINT to this process right after optimizer step ``steps``."""
    real_step = Trainer._train_step
    calls = {"n": 0}

    def step_then_signal(self, *args):
        real_step(self, *args)
        calls["n"] += 1
        if calls["n"] == steps:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_train_step", step_then_signal)


# Stopped in mid-epoch 1, after its last batch, in mid-epoch 2 with a half-full log window.
@pytest.mark.parametrize("stop_after, log_every", [(2, 1), (3, 1), (5, 2)])
def test_resume_is_exact(tmp_path, monkeypatch, stop_after, log_every, tiny_trainer):
    straight = tiny_trainer(tmp_path / "straight", log_every=log_every)
    assert straight.fit().status == "completed"

    _interrupt_after(monkeypatch, stop_after)
    interrupted = tiny_trainer(tmp_path / "resumed", log_every=log_every)
    handler = signal.getsignal(signal.SIGINT)
    result = interrupted.fit()
    monkeypatch.undo()
    assert result.status == "interrupted" and result.signal == signal.SIGINT
    assert result.global_step == stop_after
    assert signal.getsignal(signal.SIGINT) is handler  # restored after fit

    resumed = tiny_trainer(tmp_path / "resumed", log_every=log_every)  # a new process would seed and build the same way
    resumed.load_state_dict(load_checkpoint(result.checkpoint))
    steps_run = []
    real_step = resumed._train_step
    resumed._train_step = lambda *batch: (steps_run.append(1), real_step(*batch))
    assert resumed.fit().status == "completed"
    assert len(steps_run) == 6 - stop_after  # it continued, it did not start over

    expected = step_losses(tmp_path / "straight")
    assert len(expected) >= 4 and step_losses(tmp_path / "resumed") == expected  # bit-identical
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    histories = [json.loads((tmp_path / d / "training_history.json").read_text()) for d in ("straight", "resumed")]
    assert histories[0] == histories[1]


def test_eval_every_adds_validation_records(tmp_path, tiny_trainer):
    trainer = tiny_trainer(tmp_path, num_epochs=1, eval_every=2, log_every=3)
    assert trainer.fit().status == "completed"
    records = read_jsonl(tmp_path / "metrics.jsonl")
    evals = [r for r in records if "val/loss" in r and "train/loss" not in r]
    assert [r["step"] for r in evals] == [2]  # step 3 is the epoch end, validated there anyway
    assert evals[0]["val/perplexity"] == pytest.approx(math.exp(evals[0]["val/loss"]))
    assert [r["step"] for r in records if "batch/loss" in r] == [3]
