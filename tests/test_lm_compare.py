"""The LM comparison benchmark (benchmarks/lm_compare.py): its runs differ only where they should."""

import pytest

from benchmarks import lm_compare
from breath.cli import build_parser
from breath.train.config import resolve_config



def model_fields(flags: list[str]) -> dict:
    """The ModelConfig that ``breath train --preset small FLAGS`` builds (the real parser and merge)."""
    options = vars(build_parser().parse_args(["train", "--preset", "small", *flags]))
    del options["command"]
    return resolve_config(options)[1].to_dict()


def test_each_ablation_switches_off_exactly_its_mechanism():
    variants = lm_compare.variants(lm_compare.parse_args([]))
    assert list(variants) == ["phase1", "phase2", "transformer", "phase2 no-snr", "phase2 no-resonance",
                              "phase2 no-lyapunov", "phase2 full-resolvent", "phase2 no-conv",
                              "phase2 key-shift"]
    base = model_fields(variants["phase2"])
    expected = {"phase2 no-snr": {"gamma_boost": 1.0, "eta_boost": 1.0},
                "phase2 no-resonance": {"resonance_threshold": 0.0},
                "phase2 no-lyapunov": {"lyapunov_gamma_step": 0.0},
                "phase2 full-resolvent": {"resolvent": "full"},
                "phase2 no-conv": {"memory_conv": 0},
                "phase2 key-shift": {"memory_conv": 0, "memory_key_shift": True}}
    for name, changed in expected.items():
        fields = model_fields(variants[name])
        assert {k: v for k, v in fields.items() if base[k] != v} == changed, name


@pytest.mark.parametrize("argv, message", [(["--archs", "rnn"], "--archs"), (["--ablations", "no-ffn"], "--ablations"),
                                           (["--max-steps", "2", "--num-epochs", "3"], "--max-steps")])
def test_bad_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        lm_compare.parse_args(argv)
    assert message in capsys.readouterr().err


def test_report_prints_the_markdown_of_earlier_runs(tmp_path, capsys):
    row = {"dataset": "shakespeare", "model": "phase2", "parameters": 1.5e6, "train_tokens": 8192,
           "best_val_loss": 5.0, "best_val_ppl": 148.4, "test_ppl": 150.2, "tokens_per_sec": 1000.0,
           "peak_vram_mb": None, "mean_gamma": 0.07, "lyapunov_stable_ratio": 0.4, "sample": "ROMEO: the"}
    settings = vars(lm_compare.parse_args(["--max-steps", "6", "--output-dir", str(tmp_path)]))
    report = {"date": "2026-12-04T22:00+00:00", "device": "cpu", "command": "python benchmarks/lm_compare.py",
              "settings": {k: str(v) if k == "output_dir" else v for k, v in settings.items()},
              "n_seq": 512, "steps": 6, "git_commit": "abc123", "git_dirty": True, "rows": [row]}
    lm_compare.write_report(tmp_path, report)
    # a result of before the commit was kept and the diagnostics had one name each
    old_row = {lm_compare.OLD_ROW_KEYS.get(k, k): v for k, v in row.items()}
    old = {**{k: v for k, v in report.items() if not k.startswith("git_")}, "rows": [old_row]}
    (tmp_path / "old.json").write_text(lm_compare.json.dumps(old))
    lm_compare.main(["--report", str(tmp_path / "lm_compare.json"), str(tmp_path / "old.json")])
    printed = capsys.readouterr().out
    assert printed.startswith((tmp_path / "lm_compare.md").read_text())
    assert "cpu, commit abc123 (dirty tree):" in printed and "cpu, commit not recorded:" in printed
    assert printed.count("| shakespeare | phase2 | 1.50M | 8,192 | 5.0000 | 148.4 | 150.2 |") == 2
    assert printed.count("| 0.0700 | 0.400 |") == 2
