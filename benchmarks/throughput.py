"""Side-by-side speed of phase2, phase1 and transformer on one GPU, in one process.

Three measurements, each printed as a table and written to JSON:

1. Training: tokens/s of a full step (forward + backward + AdamW, bf16 autocast), peak VRAM and
   model-FLOPs utilisation, for every (preset, batch, length) setting, eager and compiled.
2. Op level: forward and forward+backward time of the dissipative-memory op (Triton vs the PyTorch
   chunked reference), and flash-linear-attention's ``chunk_simple_gla`` forward when importable.
3. Decoding (``--only decode``; estimated at ~6 min on an H200, not yet run there): ms/token,
   tokens/s, state size and peak memory of one-token steps after a 1K/32K/128K-token context,
   batch 1/16/64, phase2 and phase1 (recurrent state) vs transformer (KV cache preallocated,
   written in place), each eager and through CUDA graphs (``breath.decoding``), with the graphs'
   speed-up; ends with the issue-15 targets.

    python benchmarks/throughput.py                      # everything (over 10 minutes on an H200; see below)
    python benchmarks/throughput.py --only train --settings base:32:1024 --modes eager
    python benchmarks/throughput.py --report a.json b.json  # one set of tables from several runs' JSON

On a machine with two GPUs, the eager and compiled halves can run side by side, one process per GPU
(``CUDA_VISIBLE_DEVICES=0 ... --modes eager`` and ``CUDA_VISIBLE_DEVICES=1 ... --only train --modes
compiled``); every ratio is still between peers timed in the same process. On 2026-11-30 (evening, two
H200s) both halves, side by side, took 371 s.

Model FLOPs per token (forward + backward = 3× forward): ``6·N`` for the weights (N without the
embedding, which is a lookup; the tied LM head counted once) plus the token mixing — attention
``6·L·H·d_h·T`` (causal: half of ``12·L·H·d_h·T``), memory ``6·L·H·(d_h·C + 2·d_h²)`` for chunk C.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from torch.utils._pytree import tree_map

from breath import ModelConfig, build_model
from breath.decoding import Decoder
from breath.models import ModelState

ARCHS = ("phase2", "phase1", "transformer")
DEFAULT_SETTINGS = ("base:4:1024", "base:32:1024", "base:4:8192", "large:8:2048")
# --modes: eager, or torch.compile with one of its modes ("cudagraphs": CUDA graphs replay the whole
# forward and backward, which removes the host's launch time; needs no host sync inside the model).
COMPILE_MODES = {"compiled": "default", "cudagraphs": "reduce-overhead"}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}


def peak_flops() -> float:
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), float("nan"))


def flops_per_token(cfg: ModelConfig, n_params: int, length: int) -> float:
    weights = 6 * (n_params - cfg.vocab_size * cfg.d_model) + 6 * cfg.vocab_size * cfg.d_model
    mixing = {
        "transformer": 6 * cfg.n_layers * cfg.num_heads * cfg.head_dim * length,
        "phase2": 6 * cfg.n_layers * cfg.num_heads * (cfg.head_dim * cfg.memory_chunk + 2 * cfg.head_dim**2),
        "phase1": 0,
    }[cfg.arch]
    return weights + mixing


def timed(fn, warmup: int, repeat: int) -> float:
    """Median seconds of ``fn()`` with CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def train_step_benchmark(arch: str, preset: str, batch: int, length: int, mode: str, vocab: int) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset, arch=arch, vocab_size=vocab, n_seq=length, dropout=0.0)
    with torch.device("cuda"):  # build on the GPU: the zeta init's SVDs run there
        model = build_model(cfg).cuda()  # .cuda() also moves the (CPU-cached) zeta basis buffers
    n_params = model.num_parameters()
    step_model = model if mode == "eager" else torch.compile(model, mode=COMPILE_MODES[mode])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, vocab, (batch, length + 1), device="cuda")

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            logits = step_model(ids[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, warmup=3, repeat=10)
    tokens_per_s = batch * length / seconds
    result = {
        "arch": arch, "preset": preset, "batch": batch, "length": length, "mode": mode,
        "params_M": round(n_params / 1e6, 1), "step_ms": round(seconds * 1e3, 2),
        "tokens_per_s": round(tokens_per_s), "peak_vram_GB": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "mfu": round(tokens_per_s * flops_per_token(cfg, n_params, length) / peak_flops(), 4),
    }
    del model, step_model, optimizer
    torch.cuda.empty_cache()
    return result


def op_benchmark(batch: int, heads: int, length: int, dim: int, chunk: int) -> list[dict]:
    from breath.layers.zeta import zeta_basis
    from breath.ops.consolidation import ConsolidationConfig
    from breath.ops.dissipative_memory import dissipative_memory

    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, dim, device="cuda", generator=gen, dtype=torch.bfloat16)
               for _ in range(3))
    k = F.normalize(k.float(), dim=-1).to(torch.bfloat16)
    gamma = 0.01 + 0.02 * torch.rand(batch, heads, length, device="cuda", generator=gen)
    basis, cfg = zeta_basis(dim).cuda(), ConsolidationConfig(chunk=chunk)
    rows = []
    for name, use_triton in (("memory (triton)", True), ("memory (pytorch)", False)):
        inputs = [t.detach().requires_grad_() for t in (q, k, v, gamma)]
        try:
            forward = lambda: dissipative_memory(*inputs, 0.1, basis, cfg, use_triton=use_triton)[0]  # noqa: E731
            fwd = timed(forward, 3, 20)
            fwd_bwd = timed(lambda: forward().float().sum().backward(), 3, 10)
        except NotImplementedError as error:
            rows.append({"op": name, "error": str(error)})
            continue
        rows.append({"op": name, "forward_ms": round(fwd * 1e3, 3), "fwd_bwd_ms": round(fwd_bwd * 1e3, 3)})
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except ImportError:
        rows.append({"op": "fla chunk_simple_gla", "error": "flash-linear-attention not importable"})
    else:
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # fla layout (B, T, H, D)
        g = (-gamma).transpose(1, 2).contiguous()
        fwd = timed(lambda: chunk_simple_gla(qt, kt, vt, g=g, scale=1.0), 3, 20)
        rows.append({"op": "fla chunk_simple_gla", "forward_ms": round(fwd * 1e3, 3)})
    for row in rows:
        row.update(batch=batch, heads=heads, length=length, dim=dim)
    return rows


DECODE_PREFILL_CHUNK = 4096  # tokens per prefill call: a long context is prefilled through the state


def copy_state(state: ModelState, batch: int = 1) -> ModelState:
    """A copy of a batch-1 state with ``batch`` rows (each a copy of the one row: decoding time
    does not depend on the values)."""
    return ModelState(state.pos, tree_map(
        lambda t: t.expand(batch, *t.shape[1:]).clone() if isinstance(t, torch.Tensor) else t, state.layers))


def kv_cache_bytes(cfg: ModelConfig, batch: int, capacity: int) -> int:
    """Keys and values of every layer in bf16: 2 · layers · batch · heads · capacity · head_dim · 2."""
    return 2 * cfg.n_layers * batch * cfg.num_heads * capacity * cfg.head_dim * 2


def decode_steps(step, token: torch.Tensor, count: int) -> tuple[float, torch.Tensor]:
    """Seconds per step of ``count`` greedy steps (host and device: synchronised before and after)."""
    torch.cuda.synchronize()
    begin = time.perf_counter()
    for _ in range(count):
        token = step(token)[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    return (time.perf_counter() - begin) / count, token


@torch.no_grad()
def decode_benchmark(arch: str, preset: str, batches: list[int], contexts: list[int], new_tokens: int,
                     vocab: int) -> list[dict]:
    """One-token steps after each context, eager (``model(token, state)``) and CUDA graphs
    (:class:`breath.decoding.Decoder`), bf16 autocast. The contexts are one batch-1 sequence,
    prefilled once in chunks of DECODE_PREFILL_CHUNK tokens; a batch repeats its state. Each mode
    first runs memory_chunk + 1 untimed steps, so every kind of step (a chunk boundary included)
    is compiled, and captured, before timing."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset, arch=arch, vocab_size=vocab, dropout=0.0)
    with torch.device("cuda"):
        model = build_model(cfg).cuda().eval()
    ids = torch.randint(0, vocab, (1, max(contexts)), device="cuda")
    warmup, rows = cfg.memory_chunk + 1, []
    with torch.autocast("cuda", torch.bfloat16):
        snapshots, state, start = {}, None, 0
        for end in sorted({*range(DECODE_PREFILL_CHUNK, max(contexts), DECODE_PREFILL_CHUNK), *contexts}):
            state = model(ids[:, start:end], state=state).state
            if end in contexts:
                snapshots[end] = model.reserve(copy_state(state), end) if arch == "transformer" else copy_state(state)
            start = end
        del state
        for context in contexts:
            for batch in batches:
                capacity = context + 2 * (warmup + new_tokens)
                row = {"arch": arch, "preset": preset, "batch": batch, "context": context}
                need = kv_cache_bytes(cfg, batch, capacity) if arch == "transformer" else 0
                torch.cuda.empty_cache()
                if need > 0.9 * torch.cuda.mem_get_info()[0]:
                    rows.append({**row, "error": f"skipped: the KV cache needs {need / 1e9:.1f} GB, "
                                                 f"{torch.cuda.mem_get_info()[0] / 1e9:.1f} GB free"})
                    print(rows[-1], flush=True)
                    continue
                torch.cuda.reset_peak_memory_stats()
                try:
                    # reserved at batch 1, then repeated: one allocation of the big cache
                    state = copy_state(model.reserve(snapshots[context], capacity), batch)
                    token = ids[:, -1:].expand(batch, 1)

                    def eager(token):
                        nonlocal state
                        out = model(token, state=state)
                        state = out.state
                        return out.logits

                    _, token = decode_steps(eager, token, warmup)
                    eager_s, token = decode_steps(eager, token, new_tokens)
                    decoder = Decoder(model, state, capacity, cuda_graphs=True)
                    _, token = decode_steps(decoder.step, token, warmup)
                    graph_s, token = decode_steps(decoder.step, token, new_tokens)
                except torch.cuda.OutOfMemoryError:
                    rows.append({**row, "error": "out of memory"})
                    print(rows[-1], flush=True)
                    continue
                finally:
                    state = decoder = None
                for mode, seconds in (("eager", eager_s), ("graph", graph_s)):
                    rows.append({**row, "mode": mode, "ms_per_token": round(seconds * 1e3, 3),
                                 "tokens_per_s": round(batch / seconds, 1),
                                 "state_MB": round(snapshots[context].nbytes() * batch / 1e6, 1),
                                 "peak_GB": round(torch.cuda.max_memory_allocated() / 1e9, 2)})
                rows[-1]["graph_speedup"] = round(eager_s / graph_s, 1)
                print(rows[-2], rows[-1], sep="\n", flush=True)
    del model, snapshots
    torch.cuda.empty_cache()
    return rows


def decode_summary(rows: list[dict]) -> list[str]:
    """The issue-15 targets read off the graph rows: phase2 batch-1 ms/token per context (flat,
    ≤ 1 ms) and phase2 / transformer tokens/s per (batch, context) (≥ 5 at batch 64, 32K)."""
    graph = {(r["arch"], r["batch"], r["context"]): r for r in rows if r.get("mode") == "graph"}
    lines = []
    ones = [r for (arch, batch, _), r in sorted(graph.items()) if arch == "phase2" and batch == 1]
    if ones:
        lines.append("phase2 batch 1, ms/token (graph): " +
                     ", ".join(f"{r['context']}: {r['ms_per_token']}" for r in ones))
    for (arch, batch, context), r in sorted(graph.items()):
        other = graph.get(("transformer", batch, context))
        if arch == "phase2" and other:
            lines.append(f"batch {batch}, context {context}: phase2 / transformer tokens/s (graph) = "
                         f"{r['tokens_per_s'] / other['tokens_per_s']:.1f}")
    return lines


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    widths = {k: max(len(k), *(len(str(row.get(k, ""))) for row in rows)) for k in keys}
    print(f"\n## {title}")
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(str(row.get(k, "")).ljust(widths[k]) for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("train", "op", "decode"), action="append",
                        help="run only these parts (repeatable; default: all)")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                        help="training settings preset:batch:length")
    parser.add_argument("--modes", default="eager,compiled",
                        help=f"comma-separated: eager, {', '.join(COMPILE_MODES)} (default: eager,compiled)")
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--contexts", default="1024,32768,131072", help="decoding contexts (comma-separated)")
    parser.add_argument("--decode-batches", default="1,16,64")
    parser.add_argument("--new-tokens", type=int, default=64, help="timed decoding steps per mode")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/throughput.json"))
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                        help="print the tables of these result files (written by earlier runs) and exit")
    args = parser.parse_args()
    bad = [m for m in args.modes.split(",") if m != "eager" and m not in COMPILE_MODES]
    if bad:
        parser.error(f"--modes: unknown {', '.join(bad)}; allowed: eager, {', '.join(COMPILE_MODES)}")
    if args.report:
        reports = [json.loads(path.read_text()) for path in args.report]
        print_report({"device": " / ".join(dict.fromkeys(r["device"] for r in reports)),
                      "torch": " / ".join(dict.fromkeys(r["torch"] for r in reports)),
                      "date": " / ".join(dict.fromkeys(r["date"] for r in reports)),
                      **{part: [row for r in reports for row in r[part]] for part in ("train", "op", "decode")}})
        return
    if not torch.cuda.is_available():
        raise SystemExit("throughput.py measures GPU speed: no CUDA device found")
    parts = set(args.only or ("train", "op", "decode"))
    archs = args.archs.split(",")
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "train": [], "op": [], "decode": []}

    def save():
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))

    if "train" in parts:
        for setting in args.settings:
            preset, batch, length = setting.split(":")
            for mode in args.modes.split(","):
                for arch in archs:
                    try:
                        row = train_step_benchmark(arch, preset, int(batch), int(length), mode, args.vocab_size)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        row = {"arch": arch, "preset": preset, "batch": int(batch), "length": int(length),
                               "mode": mode, "error": "out of memory"}
                    report["train"].append(row)
                    print(row, flush=True)
                    save()
    if "op" in parts:
        for batch, length in ((32, 1024), (4, 8192)):
            report["op"] += op_benchmark(batch, 8, length, 64, 64)
            save()
    if "decode" in parts:
        batches, contexts = [int(b) for b in args.decode_batches.split(",")], [int(c) for c in args.contexts.split(",")]
        for arch in archs:
            report["decode"] += decode_benchmark(arch, "base", batches, contexts, args.new_tokens, args.vocab_size)
            save()
    print_report(report)


def print_report(report: dict) -> None:
    print(f"\n# {report['device']}, torch {report['torch']}, {report['date']}")
    print_table("training step (bf16 autocast, AdamW)", report["train"])
    print_table("memory op, B H T D as given", report["op"])
    print_table("decoding (base preset, bf16 autocast; ms and tokens/s per one-token step of the batch)",
                report["decode"])
    for line in decode_summary(report["decode"]):
        print(line)


if __name__ == "__main__":
    main()
