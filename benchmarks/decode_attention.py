"""Is the transformer baseline's decode attention a fair one? One layer's attention for a one-token
query over a KV cache (base preset: 8 heads of 64, bf16), by the kernels a KV-cache decoder can use:

- ``masked``: what ``breath.layers.attention``'s one-token step ran until commit 0a014b6 (a prompt's
  tokens still do): SDPA over the whole preallocated buffer with a length mask (memory-efficient
  kernel: flash takes no mask). Same shapes at every position, so a CUDA graph replays it.
- ``flash_sliced``: SDPA's flash kernel on the filled part of the cache only, no mask. Its shapes
  change every token: eager only, no CUDA graph.
- ``flash_seqused``: ``aten._flash_attention_forward`` (varlen) on the whole buffer with the filled
  length per sequence in a device tensor (``seqused_k``): fixed shapes, so graph-capturable.
  Timed both as a plain call and replayed from a CUDA graph.
- ``split_kv``: ``breath.ops.decode_attention`` (split-KV Triton kernels, what the attention layer's
  one-token step runs on a GPU) on the whole buffer, the filled length in a device tensor: fixed
  shapes, timed as a plain call and replayed from a CUDA graph (``split_kv_graph``).

Each is checked against an fp32 softmax on the filled slots; ``floor`` is the KV bytes read at the
measured copy bandwidth. Decides what the baseline should use (issue 15: "a fair KV-cache baseline").

    PYTHONPATH=src python benchmarks/decode_attention.py [--out OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.gpu_check_memory import bench, ceilings  # noqa: E402
from benchmarks.provenance import run_record  # noqa: E402
from breath.layers.attention import CACHED_BACKENDS  # noqa: E402
from breath.ops.decode_attention import decode_attention  # noqa: E402

HEADS, DIM = 8, 64


def variants(q, keys, values, filled):
    """name → zero-argument call; q (B, H, 1, d), caches (B, H, capacity, d), ``filled`` slots used."""
    batch, _, capacity, _ = keys.shape
    mask = (torch.arange(capacity, device=q.device) < filled)[None, :]  # (1 query, capacity)

    def masked():
        with sdpa_kernel(CACHED_BACKENDS):
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)

    def flash_sliced():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, keys[:, :, :filled], values[:, :, :filled])

    # varlen flash wants rows of (heads, dim): the cache laid out (B, capacity, H, d)
    k_rows, v_rows = (x.transpose(1, 2).contiguous().flatten(0, 1) for x in (keys, values))
    q_rows = q.transpose(1, 2).flatten(0, 1)
    steps = torch.arange(batch + 1, dtype=torch.int32, device=q.device)
    used = torch.full((batch,), filled, dtype=torch.int32, device=q.device)

    def flash_seqused():
        out = torch.ops.aten._flash_attention_forward(q_rows, k_rows, v_rows, steps, steps * capacity, 1, capacity,
                                                      0.0, False, False, seqused_k=used)[0]
        return out.view(batch, 1, HEADS, DIM).transpose(1, 2)

    length = torch.tensor(filled, device=q.device)

    def split_kv():
        return decode_attention(q, keys, values, length, use_triton="on")

    return {"masked": masked, "flash_sliced": flash_sliced, "flash_seqused": flash_seqused, "split_kv": split_kv}


def graphed(fn):
    """fn captured into a CUDA graph; the returned call replays it."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return lambda: (graph.replay(), out)[1]


def measure(batch: int, context: int, bandwidth: float) -> list[dict]:
    torch.manual_seed(0)
    capacity = context + 256  # a preallocated buffer is longer than what it holds
    shape = (batch, HEADS, capacity, DIM)
    keys, values = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    q = torch.randn(batch, HEADS, 1, DIM, device="cuda", dtype=torch.bfloat16)
    k, v = keys[:, :, :context].float(), values[:, :, :context].float()
    reference = torch.softmax(q.float() @ k.transpose(-1, -2) / DIM**0.5, dim=-1) @ v
    floor_ms = 2 * keys[:, :, :context].numel() * 2 / bandwidth * 1e3
    rows = []
    calls = variants(q, keys, values, context)
    calls["flash_seqused_graph"] = calls["flash_seqused"]
    calls["split_kv_graph"] = calls["split_kv"]
    for name, call in calls.items():
        row = {"batch": batch, "context": context, "kernel": name, "floor_ms": round(floor_ms, 4)}
        try:
            call = graphed(call) if name.endswith("_graph") else call
            error = ((call().float() - reference).norm() / reference.norm()).item()
            row.update(ms=round(bench(call), 4), rel_err=float(f"{error:.2e}"))
        except Exception as exc:  # reported in the table: a kernel this build lacks is a result too
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes (default 1,64)")
    parser.add_argument("--contexts", default="1024,32768,131072", help="comma-separated filled lengths")
    parser.add_argument("--out", type=Path, help="write the rows and the run's record here (JSON)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("decode_attention.py: needs a CUDA device")
    ceil = ceilings()
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for context in (int(c) for c in args.contexts.split(",")):
            # the caches in bf16, their row-layout copies, and the reference's fp32 copies
            need, free = 8 * batch * HEADS * (context + 256) * DIM * 2, torch.cuda.mem_get_info()[0]
            if need > 0.9 * free:
                print(f"batch {batch}, context {context}: skipped, needs {need / 1e9:.1f} GB, {free / 1e9:.1f} free")
                continue
            rows += measure(batch, context, ceil["bandwidth_Bps"])
            torch.cuda.empty_cache()
    if args.out:
        record = {**run_record(), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                  "ceilings": ceil, "rows": rows}
        args.out.write_text(json.dumps(record, indent=1))
    print(f"\n{'batch':>5} {'context':>7} | " + " | ".join(f"{n:>19}" for n in dict.fromkeys(r["kernel"] for r in rows))
          + " |  floor   (ms per layer)")
    for batch, context in dict.fromkeys((r["batch"], r["context"]) for r in rows):
        cells = [r for r in rows if (r["batch"], r["context"]) == (batch, context)]
        print(f"{batch:>5} {context:>7} | " + " | ".join(f"{r['ms']:>19.4f}" if "ms" in r else f"{'error':>19}"
                                                         for r in cells) + f" | {cells[0]['floor_ms']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
