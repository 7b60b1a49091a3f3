"""Data-parallel training under torchrun, on the CPU (gloo), with 2 ranks on the real shakespeare
corpus at tiny settings: the same steps as one process with the same global batch, only rank 0
writes, rank 0 prepares the data first, a signal or a failure on one rank stops both, resume with
the same and with another world size.

Each rank is one process: ``torchrun`` runs ``breath train`` through a small script that can make
rank 1 fail, signal itself, or refuse any write into the run's directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from breath.data.windows import make_loader
from breath.runs import load_checkpoint
from breath.train.metrics import read_jsonl

REPO = Path(__file__).resolve().parents[1]
# The default learning rate: at 1e-3 the float rounding that differs between one batch of 8 and two
# of 4 is amplified within a few steps (AdamW's first steps move every weight by ±lr whatever the
# gradient's size, and the memory's consolidation takes discrete decisions).
TINY = ["--d-model", "64", "--n-layers", "2", "--num-heads", "2", "--head-dim", "32", "--ffn-dim", "128",
        "--n-seq", "64", "--memory-chunk", "32", "--vocab-size", "512", "--num-epochs", "2",
        "--num-train-batches", "3", "--num-val-batches", "2", "--learning-rate", "1e-4", "--dropout", "0",
        "--log-every", "1", "--save-every", "1"]
TIMING = ("batch/tokens_per_sec", "epoch/time_s")

# One rank of a test run. TEST_ACTION on rank 1: "fail" raises in its second step, "signal" sends
# it SIGTERM after its first. On the other ranks, any write under TEST_WATCHED raises.
RANK_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from breath.cli import main
    from breath.train.trainer import Trainer

    rank, action = int(os.environ["RANK"]), os.environ.get("TEST_ACTION")
    if rank == 1 and action:
        real_step = Trainer._train_step

        def step(self, *batch):
            if action == "fail" and self.global_step == 1:
                raise RuntimeError("injected failure")
            real_step(self, *batch)
            if action == "signal" and self.global_step == 0:
                os.kill(os.getpid(), signal.SIGTERM)

        Trainer._train_step = step
    if rank != 0:
        watched = [os.path.realpath(p) for p in os.environ["TEST_WATCHED"].split(os.pathsep)]
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        changes = {"os.rename": 1, "os.mkdir": 0, "os.remove": 0, "os.rmdir": 0, "shutil.rmtree": 0}

        def refuse_writes(event, args):
            if event == "open" and isinstance(args[2], int) and args[2] & writing:
                path = args[0]
            elif event in changes:
                path = args[changes[event]]
            else:
                return
            if isinstance(path, (str, bytes, os.PathLike)):
                real = os.path.realpath(os.fsdecode(path))
                if any(real == w or real.startswith(w + os.sep) for w in watched):
                    raise PermissionError(f"rank {rank} writes {real}")

        sys.addaudithook(refuse_writes)
    sys.exit(main(["train", *sys.argv[1:]]))
""")


def torchrun(tmp: Path, args: list[str], watched: list[Path], action: str = "") -> subprocess.CompletedProcess:
    """``breath train ARGS`` on 2 CPU ranks under torchrun (each rank one compute thread)."""
    script = tmp / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TEST_ACTION": action,
           "TEST_WATCHED": os.pathsep.join(map(str, watched))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               *args]
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as launcher:
        try:
            stdout, stderr = launcher.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # a hang: torchrun stops (then kills) its workers on SIGTERM
            launcher.terminate()
            stdout, stderr = launcher.communicate(timeout=60)
            pytest.fail(f"torchrun did not finish in 120 s:\n{stderr}")
    return subprocess.CompletedProcess(command, launcher.returncode, stdout, stderr)


def records(run: Path) -> dict[tuple[int, str], dict]:
    """metrics.jsonl by (step, kind) without the timings; kind: batch, val or train (epoch ends)."""
    out = {}
    for record in read_jsonl(run / "metrics.jsonl"):
        kind = "train" if "train/loss" in record else "val" if "val/loss" in record else "batch"
        assert (record["step"], kind) not in out, f"step {record['step']} written twice"
        out[record["step"], kind] = {k: v for k, v in record.items() if k not in TIMING}
    return out


def assert_close(actual: dict, expected: dict, rel: float = 1e-5) -> None:
    """The same records with the same keys, every number within ``rel``."""
    assert actual.keys() == expected.keys()
    for key, record in expected.items():
        assert actual[key].keys() == record.keys(), key
        for name, value in record.items():
            if name.endswith("std_gamma"):  # with ranks: the mean of their batches' spreads, not the whole's
                continue
            close = pytest.approx(value, rel=rel) if isinstance(value, (float, list)) else value
            assert actual[key][name] == close, (key, name)


@pytest.fixture(scope="module")
def runs(cache: Path, tmp_path_factory: pytest.TempPathFactory, breath_cli) -> dict:
    """The same training (2 epochs of 3 global batches of 8 windows) in one process and on 2 ranks.

    The ranks get a cache without the val and test tokens, so rank 0 has data to prepare.
    """
    tmp = tmp_path_factory.mktemp("ddp")
    one = tmp / "one"
    code, _, stderr = breath_cli("train", *TINY, "--batch-size", "8", "--cache-dir", str(cache),
                                 "--output-dir", str(one))
    assert code == 0, stderr

    fresh = tmp / "cache"
    shutil.copytree(cache / "corpora" / "shakespeare", fresh / "corpora" / "shakespeare")
    for kept in ["tokenizers/shakespeare-v512.json", *(str(p.relative_to(cache)) for p in
                                                       cache.glob("tokens/shakespeare-v512-*-train.npy"))]:
        (fresh / kept).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cache / kept, fresh / kept)
    two = tmp / "two"
    result = torchrun(tmp, [*TINY, "--batch-size", "4", "--cache-dir", str(fresh), "--output-dir", str(two)],
                      watched=[two, fresh])
    assert result.returncode == 0, result.stderr
    return {"one": one, "two": two, "cache": fresh, "result": result}


def test_two_ranks_take_the_steps_of_one_process(runs):
    two = records(runs["two"])
    assert [step for step, kind in two if kind == "batch"] == [1, 2, 3, 4, 5, 6]
    assert_close(two, records(runs["one"]))


def test_only_rank_0_prints_and_writes(runs):
    # Rank 1 ran with every write into the output directory and the cache refused (RANK_SCRIPT).
    assert sorted(p.name for p in runs["two"].iterdir()) == sorted(p.name for p in runs["one"].iterdir())
    assert len(list(runs["cache"].glob("tokens/*-val.npy"))) == 1  # rank 0 encoded the missing splits
    stdout = runs["result"].stdout
    assert stdout.count("Epoch 2/2") == 1 and stdout.count("done: 2 epochs") == 1
    assert "8 (4 on each of 2 ranks)" in stdout
    history = json.loads((runs["two"] / "training_history.json").read_text())
    assert history["total_epochs"] == 2 and len(history["val_losses"]) == 2


def test_one_process_resumes_what_two_ranks_saved(runs, tmp_path, breath_cli):
    checkpoint = load_checkpoint(runs["two"] / "checkpoint_epoch1.pt")
    assert checkpoint["trainer_state"]["world_size"] == 2 and checkpoint["global_step"] == 3
    code, stdout, stderr = breath_cli("train", "--resume", str(runs["two"] / "checkpoint_epoch1.pt"),
                                      "--batch-size", "8", "--output-dir", str(tmp_path))
    assert code == 0, stderr
    assert "epoch 2, step 3" in stdout
    expected = {key: record for key, record in records(runs["one"]).items() if key[0] > 3}
    assert_close({key: record for key, record in records(tmp_path).items() if key[0] > 3}, expected)


def test_a_signal_on_one_rank_stops_both_after_the_same_step(runs, cache, tmp_path):
    args = [*TINY, "--batch-size", "4", "--cache-dir", str(cache), "--output-dir", str(tmp_path)]
    result = torchrun(tmp_path, args, watched=[tmp_path], action="signal")
    # Rank 1 got SIGTERM after its first step; rank 0 learns it at the second step's host read.
    assert result.returncode != 0, result.stderr
    assert result.stderr.count("stopped by SIGTERM after step 2") == 1, result.stderr
    checkpoint = load_checkpoint(tmp_path / "checkpoint_interrupted.pt")
    assert checkpoint["global_step"] == 2 and checkpoint["trainer_state"]["batch_in_epoch"] == 2

    # The same world size resumes exactly: the very steps of the uninterrupted run. The epoch means
    # add the saved sums of both ranks in another order, so they agree to float rounding.
    resumed = torchrun(tmp_path, ["--resume", str(tmp_path / "checkpoint_interrupted.pt")], watched=[tmp_path])
    assert resumed.returncode == 0, resumed.stderr
    got, expected = records(tmp_path), records(runs["two"])
    steps = [key for key in expected if key[1] == "batch"]
    assert [got.get(key) for key in steps] == [expected[key] for key in steps]
    assert_close(got, expected, rel=1e-6)


def test_a_failure_on_one_rank_stops_both(cache, tmp_path):
    args = [*TINY, "--batch-size", "4", "--cache-dir", str(cache), "--output-dir", str(tmp_path)]
    result = torchrun(tmp_path, args, watched=[tmp_path], action="fail")
    assert result.returncode != 0
    assert "rank 1: breath train: error: RuntimeError: injected failure" in result.stderr, result.stderr
    assert [step for step, kind in records(tmp_path)] == [1]  # rank 0 did not go on alone


# ------------------------------------------------------------------------------------ in-process


@pytest.mark.parametrize("batch_size, batch_in_epoch, schedule_step", [(4, 1, 1), (3, 1, 1), (1, 4, 4)])
def test_resume_keeps_the_position_in_windows(tmp_path, batch_size, batch_in_epoch, schedule_step, tiny_trainer):
    saved = tiny_trainer(tmp_path, batch_size=2)
    saved.batch_in_epoch = saved.scheduler.last_epoch = 2  # as after 2 steps of 2 windows
    resumed = tiny_trainer(tmp_path, batch_size=batch_size)
    resumed.load_state_dict(saved.state_dict())
    assert (resumed.batch_in_epoch, resumed.scheduler.last_epoch) == (batch_in_epoch, schedule_step)
    order = make_loader(saved.train_set, 1, shuffle=True, seed=saved.cfg.seed, epoch=0)
    windows = torch.cat([inputs for inputs, _ in order])
    first = next(resumed._batches())[0]
    start = batch_in_epoch * batch_size  # 4 windows taken; 3 when 4 does not divide into batches of 3
    assert torch.equal(first, windows[start:start + batch_size])
