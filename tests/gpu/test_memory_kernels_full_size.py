"""On a GPU: the dissipative-memory Triton op at full shapes against the float64 reference (skipped
without one). The accuracy part of ``benchmarks/gpu_check_memory.py`` as tests: the same cases and
tolerances, which the script imports from one place (its timings stay a benchmark).

    PYTHONPATH=src python -m pytest -q -s -m gpu tests/gpu/test_memory_kernels_full_size.py

Each case runs the op (forward and backward, from a state where it has one) and compares o, the
state, the boundary statistics and every gradient with the reference in float64, over the heads
whose discrete decisions agree (at most one may differ: the SNR threshold can split a rounding);
the outputs must be finite after the allocator was poisoned, and a second run equal bit for bit.
"""

import pytest
import torch

from benchmarks.gpu_check_memory import ACCURACY_CASES  # constants only: the module imports triton lazily

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def check():
    """The benchmark module (its functions import triton when they run)."""
    from benchmarks import gpu_check_memory

    return gpu_check_memory


def case_id(case) -> str:
    B, H, T, pos, prefix, d, chunk, model_dtypes, consolidation = case
    return (f"B{B}H{H}T{T}-pos{pos}{'-state' if prefix else ''}-d{d}c{chunk}"
            f"{'-qv_bf16' if model_dtypes else ''}-{consolidation}")


@pytest.mark.parametrize("case", ACCURACY_CASES, ids=case_id)
def test_memory_op_matches_the_float64_reference(check, case):
    B, H, T, pos, prefix, d, chunk, model_dtypes, consolidation = case
    row = check.accuracy(B, H, T, pos, prefix, B + T + pos, d, chunk, model_dtypes, consolidation)["triton"]
    print(case_id(case), {k: (f"{v:.1e}" if isinstance(v, float) else v) for k, v in row.items()})
    assert row["heads_with_other_decisions"] <= 1, row
    assert row["finite"] and row["bitwise_repeat"], row
    assert max(row[k] for k in check.STATE_PATH if k in row) < check.TOL_STATE, row  # no stats: no consolidation
    bf16 = check.BF16_GRADS if model_dtypes else ()
    assert max(row[k] for k in check.OUTPUTS if k not in bf16) < check.TOL_OUT, row
    if bf16:
        assert max(row[k] for k in bf16) < check.TOL_BF16, row
    assert row["vector"] < check.TOL_VECTOR, row


def test_memory_op_compiles_to_the_eager_values(check):
    result = check.compile_check()
    print(result)
    assert result["loss_rel"] < 1e-4 and result["grad_rel"] < 1e-3, result
