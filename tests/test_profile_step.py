"""benchmarks/profile_step.py: the training- and decoding-step profiles run on the CPU and count operators."""

import pytest
import torch

from benchmarks import profile_step


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


@pytest.mark.parametrize("arch", ["transformer", "gpt"])
def test_training_profile_on_cpu_counts_operators(arch, capsys):
    result = profile_step.main(["--arch", arch, "--preset", "small", "--batch", "1", "--length", "16",
                                "--device", "cpu", "--top", "5"])
    counts = result["operators"]
    assert result["operators_per_step"] == sum(counts.values()) and counts["_fused_adamw_"] == 1
    assert result["gpu_ms_per_step"] is None and result["kernels"] == []  # no CUDA
    # the rotary angles are not recomputed per layer and step (cached), and no dropout runs at dropout 0
    assert counts.get("cos", 0) == 0 and not {"native_dropout", "bernoulli_"} & counts.keys()
    assert "operators per step" in capsys.readouterr().out


def test_decode_profile_has_no_gpt():
    with pytest.raises(SystemExit):
        profile_step.main(["--arch", "gpt", "--decode", "16", "--device", "cpu"])


def test_decode_profile_of_the_decoder_on_cpu(capsys):
    """--decoder: the Decoder's steps (eager on the CPU) are profiled; --compile needs CUDA, --decoder --decode."""
    result = profile_step.main(["--arch", "phase2", "--preset", "small", "--decode", "20", "--batch", "1",
                                "--device", "cpu", "--steps", "2", "--top", "3", "--decoder"])
    assert result["operators_per_step"] > 10 and "(Decoder steps)" in capsys.readouterr().out
    for extra in (["--decoder", "--compile"], ["--compile"]):
        with pytest.raises(SystemExit):
            profile_step.main(["--decode", "20", "--device", "cpu", *extra])
    with pytest.raises(SystemExit):
        profile_step.main(["--decoder", "--device", "cpu"])
