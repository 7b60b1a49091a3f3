"""On a GPU: the BK resolvent's Triton kernels at full shapes against the complex128 reference
(skipped without one). The accuracy part of ``benchmarks/gpu_check_bk.py`` as tests, with its
tolerance (its timings and the chunk-length sweep stay a benchmark):

    PYTHONPATH=src python -m pytest -q -s -m gpu tests/gpu/test_bk_kernels_full_size.py

g and the gradients of a, h, z and left through the public op (the dispatch's choice of sequential
or chunked scan), then the chunked scan and the sequential kernel called directly at the
(chains, T) of issue 14, each at Im z = 1 and 0.1.
"""

import pytest
import torch

from benchmarks import gpu_check_bk as check  # its functions import triton and breath's ops when they run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("imz", [1.0, 0.1])
@pytest.mark.parametrize("shape", check.SHAPES, ids=lambda s: "B{}C{}T{}".format(*s))
def test_public_op_matches_the_complex128_reference(shape, imz):
    from breath.ops.bk_resolvent import bk_resolvent, bk_resolvent_reference

    B, C, T = shape
    ref = check.run(bk_resolvent_reference, *check.make_inputs(B, C, T, imz, torch.complex128, "cuda"))
    got = check.run(bk_resolvent, *check.make_inputs(B, C, T, imz, torch.complex64, "cuda"), use_triton="on")
    errors = [check.rel_err(x, r) for x, r in zip(got, ref)]
    print(f"B={B} C={C} T={T} Im z={imz}: rel err [g, da, dh, dz, dleft] {['%.1e' % e for e in errors]}")
    assert max(errors) < check.TOL, errors


@pytest.mark.parametrize("imz", [1.0, 0.1])
@pytest.mark.parametrize("shape", check.SCAN_SHAPES, ids=lambda s: "N{}T{}".format(*s))
def test_chunked_scan_and_sequential_kernel_match_the_reference(shape, imz):
    from breath.ops.bk_resolvent_triton import bk_causal_triton, scan_chunk

    N, T = shape
    e, beta, sigma, w = check.scan_inputs(N, T, imz, "cuda")
    ref = check.scan_grads(check.scan_reference, e, beta, sigma, w)
    c64 = [x.to(torch.complex64) for x in (e, beta, sigma, w)]
    for chunk in sorted({0, scan_chunk(T, N)}):  # 0: the sequential kernel
        got = check.scan_grads(lambda *xs: bk_causal_triton(*xs, chunk=chunk), *c64)
        error = max(check.rel_err(x, r) for x, r in zip(got, ref))
        print(f"chains={N} T={T} Im z={imz} chunk={chunk}: max rel err over g, de, dbeta, dsigma {error:.1e}")
        assert error < check.TOL
