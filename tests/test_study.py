"""The quality study runner (benchmarks/study.py): aggregation, matched parameters, resumability, and
one tiny run end to end through the real command line on ptb."""

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
spec = importlib.util.spec_from_file_location("study", BENCHMARKS / "study.py")
study = sys.modules["study"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def fake_run(variant: str, seed: int, val: float, test_ppl: float, dataset: str = "ptb") -> dict:
    return {"dataset": dataset, "variant": variant, "seed": seed, "best_val_loss": val,
            "best_val_ppl": math.exp(val), "test_loss": math.log(test_ppl), "test_ppl": test_ppl,
            "word_ppl": test_ppl, "train_tokens": 1000, "train_time_s": 1.0, "wall_s": 2.0,
            "parameters": 10**6, "date": "2026-12-04T23:00+00:00", "device": "cpu", "torch": "2",
            "git_commit": "0" * 40, "git_dirty": False, "command": "python benchmarks/study.py"}


def test_mean_sample_std_ratios_and_two_sigma_verdicts():
    rows = [fake_run("phase2", s, v, p) for s, v, p in [(0, 4.00, 60.0), (1, 4.02, 62.0), (2, 4.04, 61.0)]]
    rows += [fake_run("transformer", s, 4.1, p) for s, p in [(0, 66.0), (1, 62.0), (2, 64.0)]]
    rows += [fake_run("no-snr", s, v, 70.0) for s, v in [(0, 4.10), (1, 4.12), (2, 4.14)]]  # 5σ worse
    rows += [fake_run("no-conv", s, v, 61.0) for s, v in [(0, 4.01), (1, 4.03), (2, 4.05)]]  # 0.5σ worse
    rows.append({**fake_run("no-lyapunov", 0, 4.0, 60.0), "error": "training exited with 1"})
    agg = study.aggregate(rows)
    val = agg["variants"]["ptb / phase2"]["best_val_loss"]
    assert val["n"] == 3 and val["mean"] == pytest.approx(4.02) and val["std"] == pytest.approx(0.02)
    ratio = agg["ratios"]["ptb / phase2/transformer"]
    paired = [60 / 66, 62 / 62, 61 / 64]
    assert ratio["mean"] == pytest.approx(statistics.fmean(paired))
    assert ratio["std"] == pytest.approx(statistics.stdev(paired)) and ratio["n"] == 3
    snr, conv = agg["ablation_gains"]["ptb / no-snr"], agg["ablation_gains"]["ptb / no-conv"]
    assert snr["gain"] == pytest.approx(0.10) and snr["sigmas"] == pytest.approx(5.0) and snr["above_2_sigma"]
    assert conv["sigmas"] == pytest.approx(0.5) and conv["above_2_sigma"] is False
    assert "ptb / no-lyapunov" not in agg["ablation_gains"]  # a failed run counts for nothing...
    markdown = study.report_markdown(rows, agg)
    assert "1 failed: no-lyapunov seed 0" in markdown  # ...but the report says so
    assert "| no-snr | +0.1000 | 0.0200 | +5.0 | yes |" in markdown
    assert "| no-conv | +0.0100 | 0.0200 | +0.5 | no |" in markdown
    assert "| phase2 | 3 | 1.00M | 1,000 | 4.0200 ± 0.0200 |" in markdown


def test_one_seed_has_no_spread_and_no_verdict():
    agg = study.aggregate([fake_run("phase2", 0, 4.0, 60.0), fake_run("no-snr", 0, 4.1, 65.0)])
    assert agg["variants"]["ptb / phase2"]["best_val_loss"]["std"] is None
    assert agg["ablation_gains"]["ptb / no-snr"]["above_2_sigma"] is None


def test_phase1_matched_is_within_two_percent_of_phase2():
    ffn, got, want = study.matched_ffn_dim("small", 512)
    assert want == study.count_parameters("small", 512, arch="phase2")
    assert got == study.count_parameters("small", 512, arch="phase1", ffn_dim=ffn)
    assert abs(got - want) <= 0.02 * want and ffn % 64 == 0 and ffn > study.PRESETS["small"]["ffn_dim"]
    # No other multiple of 64 is closer.
    for other in (ffn - 64, ffn + 64):
        assert abs(study.count_parameters("small", 512, arch="phase1", ffn_dim=other) - want) >= abs(got - want)


def test_variant_flags_and_bad_options(capsys):
    args = study.parse_args(["--until-converged", "--preset", "small", "--vocab-size", "512"])
    flags = study.variant_flags(args)
    assert flags["no-consolidation"] == ["--arch", "phase2", "--no-consolidation"]
    assert flags["phase1-matched"][:3] == ["--arch", "phase1", "--ffn-dim"]
    assert "--early-stopping-patience 2" in args.train_args and "parameters; phase2:" in capsys.readouterr().out
    for argv, message in [([], "--token-budget N or --until-converged"), (["--until-converged", "--variants", "rnn"],
                          "--variants"), (["--token-budget", "10", "--preset", "small"], "--token-budget")]:
        with pytest.raises(SystemExit):
            study.parse_args(argv)
        assert message in capsys.readouterr().err


def test_a_finished_run_is_skipped_and_a_failed_one_retried(tmp_path, monkeypatch):
    args = study.parse_args(["--token-budget", "100000", "--preset", "small", "--output-dir", str(tmp_path)])
    trained = []
    monkeypatch.setattr(study.lm_compare, "benchmark_model", lambda run_args, dataset, name, flags, n_seq:
                        trained.append((name, run_args.seed)) or {"dataset": dataset, "model": name,
                                                                  "run_dir": str(tmp_path), "error": "boom"})
    done = tmp_path / "ptb" / "seed0" / "runs" / "ptb" / "phase2" / "result.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps(fake_run("phase2", 0, 4.0, 60.0)))
    assert study.run_one(args, "phase2", 0, [], {})["best_val_loss"] == 4.0 and trained == []
    study.run_one(args, "phase2", 1, [], {})
    assert trained == [("phase2", 1)]
    failed = tmp_path / "ptb" / "seed1" / "runs" / "ptb" / "phase2" / "result.json"
    assert "error" in json.loads(failed.read_text())
    (failed.parent / "metrics.jsonl").write_text("{}")  # what a cut attempt left
    study.run_one(args, "phase2", 1, [], {})
    assert trained == [("phase2", 1)] * 2 and not (failed.parent / "metrics.jsonl").exists()


def test_two_seeds_two_variants_end_to_end_on_ptb(tmp_path, corpus_cache):
    tiny = (f"--d-model 32 --n-layers 1 --num-heads 2 --head-dim 16 --ffn-dim 64 --memory-chunk 16 "
            f"--cache-dir {corpus_cache}")
    argv = ["--dataset", "ptb", "--variants", "phase2,transformer", "--seeds", "0,1", "--token-budget", "1024",
            "--num-epochs", "2", "--preset", "small", "--batch-size", "4", "--n-seq", "64", "--val-batches", "2",
            "--test-batches", "2", "--eval-stride", "16", "--device", "cpu", "--train-args", tiny,
            "--output-dir", str(tmp_path)]
    study.main(argv)
    results = sorted((tmp_path / "ptb").glob("seed*/runs/ptb/*/result.json"))
    assert len(results) == 4
    rows = [json.loads(path.read_text()) for path in results]
    for row in rows:
        assert "error" not in row, row
        assert row["train_tokens"] == 1024 and row["steps"] == 4 and row["git_commit"] and "--seed" in row[
            "train_command"] and "eval" in row["eval_command"] and math.isfinite(row["test_ppl"])
        # the sliding-window evaluation (each token with >= 48 of context) beside the packed one
        assert row["eval_stride"] == 16 and math.isfinite(row["strided_word_ppl"])
    assert {(r["variant"], r["seed"]) for r in rows} == {(v, s) for v in ("phase2", "transformer") for s in (0, 1)}
    report = (tmp_path / "ptb" / "study.md").read_text()
    assert "| phase2 | 2 |" in report and "| transformer | 2 |" in report and "phase2/transformer | 2 |" in report
    # --report rebuilds the same tables from the raw JSON alone.
    rebuilt = tmp_path / "rebuilt"
    study.main(["--report", *map(str, results), "--output-dir", str(rebuilt)])
    assert (rebuilt / "study.md").read_text() == report
