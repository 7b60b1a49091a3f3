"""The LM comparison benchmark (benchmarks/lm_compare.py): its runs differ only where they should."""

import importlib.util
import sys
from pathlib import Path

import pytest

from breath.cli import build_parser
from breath.train.config import resolve_config

spec = importlib.util.spec_from_file_location("lm_compare", Path(__file__).parents[1] / "benchmarks" / "lm_compare.py")
lm_compare = sys.modules["lm_compare"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lm_compare)


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
