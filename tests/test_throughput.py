"""benchmarks/throughput.py's training part and its plain GPT (benchmarks/plain_gpt.py), on the CPU:
the GPT has the preset's sizes and is causal, and a smoke run writes the JSON and the markdown table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from breath import ModelConfig, build_model

from benchmarks import throughput
from benchmarks.plain_gpt import PlainGPT

CFG = ModelConfig(vocab_size=97, d_model=32, n_layers=2, num_heads=2, head_dim=8, ffn_dim=64, dropout=0.0,
                  arch="transformer")


def test_plain_gpt_has_the_transformers_sizes():
    gpt = PlainGPT(CFG, max_length=40)
    transformer = build_model(CFG)
    assert gpt.blocks[0].qkv.weight.shape == transformer.blocks[0].attn.qkv.weight.shape
    assert gpt.blocks[0].up.weight.shape == transformer.blocks[0].ffn.up.weight.shape
    assert len(gpt.blocks) == len(transformer.blocks) and gpt.head.weight is gpt.embed.weight
    # the same weights but for the FFN biases (the gpt has none) and its learned position table
    ffn_biases = sum(b.ffn.up.bias.numel() + b.ffn.down.bias.numel() for b in transformer.blocks)
    assert gpt.num_parameters() == transformer.num_parameters() - ffn_biases + 40 * CFG.d_model


def test_plain_gpt_is_causal_and_trains():
    torch.manual_seed(0)
    gpt = PlainGPT(CFG, max_length=40).double()
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    base = gpt(ids)
    assert base.shape == (2, 40, 97)
    perturbed = ids.clone()
    perturbed[:, 21] = (perturbed[:, 21] + 1) % 97
    out = gpt(perturbed)
    assert torch.equal(out[:, :21], base[:, :21]) and not torch.equal(out[:, 21:], base[:, 21:])
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gpt.parameters())


def test_ratios_are_against_the_faster_gpt_peer():
    rows = [dict(arch=a, preset="base", batch=4, length=1024, mode="eager", tokens_per_s=t)
            for a, t in (("gpt", 200), ("transformer", 150), ("phase2", 100))]
    rows.append(dict(arch="transformer", preset="base", batch=4, length=1024, mode="compiled", tokens_per_s=300))
    throughput.add_ratios(rows)
    assert [r["ratio"] for r in rows] == [1.0, 0.75, 0.5, 1.0]
    table = throughput.training_table(rows)
    assert table[0].startswith("| preset | batch × length | mode | gpt | transformer | phase2 |")
    assert "| base | 4 × 1024 | eager | 200 (1.00) | 150 (0.75) | 100 (0.50) |" in table[2]
    assert "| base | 4 × 1024 | compiled | — | 300 (1.00) | — |" in table[3]


def test_training_smoke_run_on_cpu(tmp_path, capsys):
    out = tmp_path / "run.json"
    report = throughput.main(["--only", "train", "--device", "cpu", "--archs", "gpt,transformer,phase2-noconsolidation",
                              "--settings", "small:1:16", "--modes", "eager", "--profile", "small:1:16",
                              "--profile-arch", "phase2-noconsolidation", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved == report
    for key in ("date", "device", "torch", "triton", "command", "git_commit", "git_dirty", "wall_s"):
        assert key in saved, key
    assert saved["dropout"] == 0.0 and "--profile small:1:16" in saved["command"]
    rows = saved["train"]
    assert [r["arch"] for r in rows] == ["gpt", "transformer", "phase2-noconsolidation"]
    assert max(r["ratio"] for r in rows) == 1.0 and all(r["tokens_per_s"] > 0 for r in rows)
    profile = saved["profile"]
    assert profile["arch"] == "phase2-noconsolidation" and profile["operators_per_step"] > 100
    capsys.readouterr()
    throughput.main(["--report", str(out)])
    printed = capsys.readouterr().out
    assert "| small | 1 × 16 | eager |" in printed and "dropout 0 for every model" in printed


def test_bad_options_name_the_allowed_values(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--archs", "gpt,bert"])
    assert ("--archs: unknown bert; allowed: gpt, transformer, phase1, phase2, phase2-noconsolidation"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit):
        throughput.main(["--device", "cpu"])
    assert "--device cpu: runs the training part only" in capsys.readouterr().err


def test_runs_as_a_script_from_the_repository_root(tmp_path):
    """``python benchmarks/throughput.py`` (as the docs run it) imports its neighbours as the package."""
    root = Path(__file__).resolve().parents[1]
    saved = {"device": "cpu", "torch": "2", "date": "2026-12-04", "git_commit": "abc123", "profile": None,
             "train": [], "op": [], "decode": []}
    (tmp_path / "run.json").write_text(json.dumps(saved))
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run([sys.executable, "benchmarks/throughput.py", "--report", str(tmp_path / "run.json")],
                          cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "# cpu, torch 2, Triton not recorded, 2026-12-04, commit abc123" in done.stdout


def test_decode_summary_reads_each_timed_mode():
    """The issue-15 lines: phase2's batch-1 ms/token by context, and phase2 / transformer tokens/s, per mode."""
    from benchmarks.throughput import decode_summary

    rows = [{"arch": arch, "batch": batch, "context": 1024, "mode": mode, "ms_per_token": ms,
             "tokens_per_s": batch / ms * 1e3}
            for arch, batch, mode, ms in (("phase2", 1, "graph", 0.9), ("phase2", 1, "compiled", 0.4),
                                          ("transformer", 1, "graph", 0.6), ("phase2", 1, "eager", 9.0))]
    assert decode_summary(rows) == [
        "phase2 batch 1, ms/token (graph): 1024: 0.9",
        "batch 1, context 1024: phase2 / transformer tokens/s (graph) = 0.7",
        "phase2 batch 1, ms/token (compiled): 1024: 0.4",
    ]


def test_a_row_measured_again_in_a_later_file_replaces_the_earlier(tmp_path, capsys):
    """Merged reports never mix two runs of one row: the table and the ratio both take the later one."""
    def run(date, gpt, phase2=None):
        rows = [{"arch": "gpt", "preset": "base", "batch": 4, "length": 1024, "mode": "compiled", "tokens_per_s": gpt}]
        rows += [] if phase2 is None else [{**rows[0], "arch": "phase2", "tokens_per_s": phase2}]
        path = tmp_path / f"{date}.json"
        path.write_text(json.dumps({"device": "gpu", "torch": "2", "date": date, "git_commit": "abc", "profile": None,
                                    "train": rows, "op": [], "decode": []}))
        return str(path)

    throughput.main(["--report", run("first", 500), run("second", 400, 100)])
    captured = capsys.readouterr()
    assert "| base | 4 × 1024 | compiled | 400 (1.00) | 100 (0.25) |" in captured.out
    assert "is replaced by that of second" in captured.err
