"""On a GPU: the transformer's rotary (one fused kernel each way in eager mode) is the pairwise rotation
in value and gradient, recurrent = parallel still holds, its q, k, v (strided views) and the plain
GPT's run on the flash kernel, compiled = eager, and throughput.py's training rows (gpt, transformer;
eager and compiled) and its phase2 kernel profile run.

    PYTHONPATH=src python -m pytest -q -m gpu tests/gpu/test_rotary_and_plain_gpt.py
"""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from breath import ModelConfig, build_model
from breath.layers.attention import rotary

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from benchmarks import throughput


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_is_the_pairwise_rotation_on_cuda(dtype, rotate_each_pair):
    x = torch.randn(4, 1024, 8, 64, device="cuda").to(dtype)  # (B, T, H, d) as the layer calls it
    x_fused, x_pairs = x.clone().requires_grad_(), x.clone().requires_grad_()
    fused = rotary(x_fused, 123, dim=-3)
    x_exact = x.double().requires_grad_()

    def pairwise(x):
        return rotate_each_pair(x.transpose(1, 2), 123).transpose(1, 2)

    pairs, exact = pairwise(x_pairs), pairwise(x_exact)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else {}  # bf16: one rounding apart at most
    torch.testing.assert_close(fused, pairs, **tol)
    grad = torch.randn_like(fused)
    for out in (fused, pairs, exact):
        out.backward(grad.to(out.dtype))
    if dtype == torch.float32:
        torch.testing.assert_close(x_fused.grad, x_pairs.grad, **tol)
    else:  # bf16 gradients round differently per path: no further from the exact one than the old code's
        error = (x_fused.grad.double() - x_exact.grad).abs().max()
        assert error <= 1.5 * (x_pairs.grad.double() - x_exact.grad).abs().max(), error


def test_transformer_recurrent_equals_parallel_on_cuda(logits_in_pieces):
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small", arch="transformer", vocab_size=1000, dropout=0.0)).cuda().eval()
    ids = torch.randint(0, 1000, (2, 70), device="cuda")
    with torch.no_grad():
        whole = model(ids).logits
        pieces, _ = logits_in_pieces(model, ids, [33, 1, 1, 35])
    torch.testing.assert_close(pieces, whole, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["transformer", "gpt"])
def test_training_step_runs_on_flash_attention(arch):
    model, cfg = throughput.build(arch, "small", 512, 1000)
    forward = model if arch == "gpt" else (lambda ids: model(ids).logits)
    ids = torch.randint(0, 1000, (2, 513), device="cuda")
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", torch.bfloat16):
        loss = F.cross_entropy(forward(ids[:, :-1]).float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_compiled_transformer_matches_eager_on_cuda():
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small", arch="transformer", vocab_size=1000, dropout=0.0)).cuda()
    ids = torch.randint(0, 1000, (2, 256), device="cuda")

    def grads(fn):
        model.zero_grad(set_to_none=True)
        logits = fn(ids).logits
        F.cross_entropy(logits.flatten(0, 1), ids.roll(-1, 1).flatten()).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    torch._dynamo.reset()
    logits, compiled_grads = grads(torch.compile(model, fullgraph=True))
    ref_logits, ref_grads = grads(model)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    for got, want in zip(compiled_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_throughput_training_rows_run(mode):
    rows = [throughput.train_step_benchmark(arch, "small", 2, 256, mode, 1000, warmup=3, repeat=2)
            for arch in ("gpt", "transformer")]
    throughput.add_ratios(rows)
    assert max(r["ratio"] for r in rows) == 1.0
    assert all(r["tokens_per_s"] > 0 and r["peak_vram_GB"] > 0 and r["mfu"] > 0 for r in rows)


def test_phase2_kernel_profile():
    model, cfg = throughput.build("phase2", "small", 256, 1000)
    result = throughput.profile_step.profile_training(model, cfg, 2, 256, steps=2, top=5)
    assert result["gpu_ms_per_step"] > 0 and len(result["kernels"]) == 5
    assert abs(sum(k["share"] for k in result["kernels"])) <= 1.0 + 1e-9
