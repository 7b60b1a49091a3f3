"""benchmarks/profile_step.py --decode: the decoding-step profile runs on the CPU and counts operators."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location("profile_step", Path(__file__).parents[1] / "benchmarks" / "profile_step.py")
profile_step = sys.modules["profile_step"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_step)


def test_operator_count_skips_views():
    x = torch.randn(4, 4)
    with profile_step.OperatorCount() as counter:
        (x.view(16).t() * 2).exp()
    assert counter.counts == {"mul": 1, "exp": 1}


@pytest.mark.parametrize("arch", ["phase2", "transformer"])
def test_decode_profile_on_cpu(arch, capsys):
    result = profile_step.main(["--arch", arch, "--preset", "small", "--decode", "20", "--batch", "1",
                                "--device", "cpu", "--steps", "2", "--top", "3"])
    assert result["wall_ms_per_step"] > 0 and result["operators_per_step"] > 10
    assert result["kernels_per_step"] is None  # no CUDA
    assert "operators per step" in capsys.readouterr().out


def test_training_profile_needs_cuda():
    with pytest.raises(SystemExit):
        profile_step.main(["--device", "cpu"])
