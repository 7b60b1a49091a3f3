"""Every Triton kernel compiles for an H100/H200 (sm_90) on this GPU-less machine, within the chip's
shared memory, with no spill on the sequential chains (benchmarks/kernel_resources.py --check).

The interpreter tests check what the kernels compute; this checks what the GPU's compiler makes of
them, which the interpreter never sees (tf32 dots, layouts, registers). It runs the script in a
subprocess: the other kernel tests of a worker set TRITON_INTERPRET=1, under which nothing compiles.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPS = ("bk_resolvent_triton.py", "dissipative_memory_triton.py", "short_conv_triton.py", "decode_attention_triton.py")


def _has_ptxas() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:
        return False
    path = get_ptxas(90).path
    return bool(path) and Path(path).exists()


pytest.importorskip("triton", reason="triton is not installed: nothing to compile")
pytestmark = pytest.mark.skipif(not _has_ptxas(), reason="this Triton has no NVIDIA backend with ptxas")


def _kernels_defined() -> set[str]:
    """Names of the @triton.jit functions named *_kernel in the ops' Triton modules."""
    names = set()
    for name in OPS:
        tree = ast.parse((ROOT / "src/breath/ops" / name).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel") and any(
                    ast.unparse(d).startswith("triton.jit") for d in node.decorator_list):
                names.add(node.name)
    return names


def test_every_kernel_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")  # a real compile, not a cached one
    out = tmp_path / "resources.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/kernel_resources.py"), "--check", "--output", str(out)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["failures"] == []
    compiled = {row["kernel"] for row in record["kernels"]}
    assert compiled == _kernels_defined()  # every kernel, and at least one of each
    for row in record["kernels"]:
        assert row["registers"] > 0 and row["num_warps"] >= 1, row
    # decode's one-token step compiles its own variants (T == 1 is specialised), and they are listed
    assert any(row["first_case"].endswith("decode B1 T1 bf16") for row in record["kernels"])


def test_refuses_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/kernel_resources.py")], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert run.returncode == 2 and "TRITON_INTERPRET=1 is set" in run.stderr
