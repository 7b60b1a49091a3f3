"""Side-by-side speed of phase2, phase1, transformer and a plain GPT on one GPU, in one process.

Three measurements, each printed as a table and written to JSON (with the date, device, torch and
Triton versions, command line and git commit):

1. Training: tokens/s of a full step (forward + backward + fused AdamW, bf16 autocast, dropout 0 for
   every model), peak VRAM and model-FLOPs utilisation, for every (preset, batch, length) setting,
   eager and compiled; each arch's ratio to the faster of ``gpt`` (``plain_gpt.py``, the strongest
   plain GPT of the same sizes) and ``transformer`` timed in the same process. ``--profile`` adds
   phase2's top GPU kernels at one setting (``profile_step.py``'s profiler).
2. Op level: forward and forward+backward time of the dissipative-memory op (Triton vs the PyTorch
   chunked reference), and flash-linear-attention's ``chunk_simple_gla`` forward when importable.
3. Decoding (``--only decode``; estimated at ~6 min on an H200, not yet run there): ms/token,
   tokens/s, state size and peak memory of one-token steps after a 1K/32K/128K-token context,
   batch 1/16/64, phase2 and phase1 (recurrent state) vs transformer (KV cache preallocated,
   written in place), each eager and through CUDA graphs (``breath.decoding``), with the graphs'
   speed-up (``--decode-modes eager,graph,compiled`` adds the step torch.compiled before capture);
   ends with the issue-15 targets.

    python benchmarks/throughput.py                      # everything (over 10 minutes on an H200; see below)
    python benchmarks/throughput.py --only train         # the training table (issue 14's settings)
    python benchmarks/throughput.py --only train --settings base:32:1024 --modes eager
    python benchmarks/throughput.py --report a.json b.json  # one set of tables from several runs' JSON

The training table's rows print as markdown (the table BENCHMARKS.md opens with). Every row also
records ``setup_s``: building the model plus the warm-up steps (compilation included), so the
run's wall time can be read off the JSON.

Compilation dominates the training part's time: every compiled row compiles afresh (on 2026-11-30
about a minute per phase2/transformer row, 7 rows in 420 s), so the 32 default rows take longer than
one 10-minute device call on one GPU (an estimate, not measured). On a machine with two GPUs, split
the settings, one process per GPU; every ratio is still between peers timed in the same process::

    CUDA_VISIBLE_DEVICES=0 python benchmarks/throughput.py --only train --settings base:4:1024 base:32:1024 \
        --output a.json &
    CUDA_VISIBLE_DEVICES=1 python benchmarks/throughput.py --only train --settings base:4:8192 base:1:32768 \
        --output b.json &
    wait; python benchmarks/throughput.py --report a.json b.json

Model FLOPs per token (forward + backward = 3× forward): ``6·N`` for the weights (N without the
embedding, which is a lookup; the tied LM head counted once) plus the token mixing — attention
``6·L·H·d_h·T`` (causal: half of ``12·L·H·d_h·T``), memory ``6·L·H·(d_h·C + 2·d_h²)`` for chunk C.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from torch.utils._pytree import tree_map

from breath import ModelConfig, build_model
from breath.decoding import Decoder
from breath.models import ModelState

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import the neighbours as the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import profile_step  # noqa: E402
from benchmarks.plain_gpt import PlainGPT  # noqa: E402
from benchmarks.provenance import run_record  # noqa: E402

ARCHS = ("gpt", "transformer", "phase1", "phase2")
# Options beside the arch: phase2-noconsolidation is phase2 with --no-consolidation (asked for by
# name; the default table is the four above).
VARIANTS = {"phase2-noconsolidation": dict(arch="phase2", consolidation=False)}
GPT_PEERS = ("gpt", "transformer")  # every training ratio is against the faster of these two
DEFAULT_SETTINGS = ("base:4:1024", "base:32:1024", "base:4:8192", "base:1:32768")
WARMUP, REPEAT = 3, 10  # training steps: warm-up (compilation, AdamW state) then timed
# --modes: eager, or torch.compile with one of its modes ("cudagraphs": CUDA graphs replay the whole
# forward and backward, which removes the host's launch time; needs no host sync inside the model).
COMPILE_MODES = {"compiled": "default", "cudagraphs": "reduce-overhead"}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}


def peak_flops() -> float:
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), float("nan"))


def flops_per_token(arch: str, cfg: ModelConfig, n_params: int, length: int) -> float:
    """The gpt's learned position table is a lookup too: it counts as embedding."""
    embedding = cfg.d_model * (cfg.vocab_size + (length if arch == "gpt" else 0))
    weights = 6 * (n_params - embedding) + 6 * cfg.vocab_size * cfg.d_model
    attention = 6 * cfg.n_layers * cfg.num_heads * cfg.head_dim * length
    mixing = {
        "gpt": attention, "transformer": attention,
        "phase2": 6 * cfg.n_layers * cfg.num_heads * (cfg.head_dim * cfg.memory_chunk + 2 * cfg.head_dim**2),
        "phase1": 0,
    }["gpt" if arch == "gpt" else cfg.arch]
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


def model_options(arch: str) -> dict:
    """The ModelConfig options of a benchmark arch (gpt: PlainGPT, built from the transformer's sizes)."""
    return VARIANTS.get(arch, {"arch": "transformer" if arch == "gpt" else arch})


def build(arch: str, preset: str, length: int, vocab: int, device: str = "cuda") -> tuple[torch.nn.Module, ModelConfig]:
    """A freshly initialised model (seed 0, dropout 0) of the preset's sizes; ``gpt`` is ``PlainGPT``."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset, **model_options(arch), vocab_size=vocab, n_seq=length, dropout=0.0)
    with torch.device(device):  # build on the GPU: the zeta init's SVDs run there
        model = PlainGPT(cfg, max_length=length) if arch == "gpt" else build_model(cfg)
    return model.to(device), cfg  # .to also moves the (CPU-cached) zeta basis buffers


def train_step_benchmark(arch: str, preset: str, batch: int, length: int, mode: str, vocab: int,
                         device: str = "cuda", warmup: int = WARMUP, repeat: int = REPEAT) -> dict:
    begin = time.perf_counter()
    model, cfg = build(arch, preset, length, vocab, device)
    n_params = model.num_parameters()
    logits_of = model if arch == "gpt" else (lambda ids: model(ids).logits)
    step_logits = logits_of if mode == "eager" else torch.compile(logits_of, mode=COMPILE_MODES[mode])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, vocab, (batch, length + 1), device=device)
    cuda = device == "cuda"

    def step():
        with torch.autocast(torch.device(device).type, torch.bfloat16):
            logits = step_logits(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    setup = time.perf_counter() - begin
    seconds = timed(step, warmup=0, repeat=repeat) if cuda else timed_on_host(step, repeat)
    tokens_per_s = batch * length / seconds
    result = {
        "arch": arch, "preset": preset, "batch": batch, "length": length, "mode": mode,
        "params_M": round(n_params / 1e6, 1), "step_ms": round(seconds * 1e3, 2),
        "tokens_per_s": round(tokens_per_s),
        "peak_vram_GB": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "mfu": round(tokens_per_s * flops_per_token(arch, cfg, n_params, length) / peak_flops(), 4) if cuda else None,
        "setup_s": round(setup, 1),
    }
    del model, step_logits, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return result


def timed_on_host(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` by the host clock (the CPU smoke run: no CUDA events)."""
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


# what names a row of each part: a later file's row with the same names replaces an earlier one
ROW_IDENTITY = {"train": ("arch", "preset", "batch", "length", "mode"),
                "op": ("op", "batch", "heads", "length", "dim"),
                "decode": ("arch", "preset", "batch", "context", "mode")}


def merge_rows(reports: list[dict], part: str) -> list[dict]:
    """The rows of ``part`` from every report, in order; a row measured again in a later report
    replaces the earlier one (said on stderr), so a table never mixes two runs of one row."""
    rows: dict[tuple, tuple[dict, str]] = {}
    for report in reports:
        for row in report[part]:
            key = tuple(row.get(name) for name in ROW_IDENTITY[part])
            if key in rows:
                print(f"--report: the {part} row {key} of {rows[key][1]} is replaced by that of {report.get('date')}",
                      file=sys.stderr)
            rows[key] = row, report.get("date")
    return [row for row, _ in rows.values()]


def add_ratios(rows: list[dict]) -> None:
    """Each row's ``ratio``: its tokens/s over the faster of gpt and transformer at its setting and mode."""
    best: dict[tuple, int] = {}
    for row in rows:
        if row["arch"] in GPT_PEERS and "tokens_per_s" in row:
            key = (row["preset"], row["batch"], row["length"], row["mode"])
            best[key] = max(best.get(key, 0), row["tokens_per_s"])
    for row in rows:
        ref = best.get((row["preset"], row["batch"], row["length"], row["mode"]))
        if ref and "tokens_per_s" in row:
            row["ratio"] = row["tokens_per_s"] / ref  # unrounded: the table rounds once


def training_table(rows: list[dict]) -> list[str]:
    """The markdown table of training rows: one line per setting and mode, tokens/s (ratio) per arch."""
    add_ratios(rows)
    archs = [a for a in (*ARCHS, *VARIANTS) if any(r["arch"] == a for r in rows)]
    archs += sorted({r["arch"] for r in rows} - set(archs))
    cells: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        cells.setdefault((row["preset"], row["batch"], row["length"], row["mode"]), {})[row["arch"]] = row

    def speed(row: dict | None) -> str:
        if row is None:
            return "—"
        if "error" in row:
            return row["error"]
        return f"{row['tokens_per_s']:,}" + (f" ({row['ratio']:.2f})" if "ratio" in row else "")

    lines = ["| preset | batch × length | mode | " + " | ".join(archs) + " | peak GB " + " / ".join(archs)
             + " | step ms " + " / ".join(archs) + " |",
             "| --- | --- | --- | " + " | ".join("---:" for _ in archs) + " | ---: | ---: |"]
    for (preset, batch, length, mode), by_arch in cells.items():
        peak = " / ".join(str(by_arch.get(a, {}).get("peak_vram_GB", "—")) for a in archs)
        ms = " / ".join(str(by_arch.get(a, {}).get("step_ms", "—")) for a in archs)
        lines.append(f"| {preset} | {batch} × {length} | {mode} | "
                     + " | ".join(speed(by_arch.get(a)) for a in archs) + f" | {peak} | {ms} |")
    return lines


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
DECODE_MODES = ("eager", "graph", "compiled")


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
                     vocab: int, modes: tuple[str, ...] = DECODE_MODES[:2],
                     on_row: Callable[[dict], None] = print) -> None:
    """One-token steps after each context in each of ``modes``: eager (``model(token, state)``), graph
    (:class:`breath.decoding.Decoder`'s CUDA graphs) and compiled (the Decoder's step
    torch.compiled, then captured), bf16 autocast. The contexts are one batch-1 sequence, prefilled
    once in chunks of DECODE_PREFILL_CHUNK tokens; a batch repeats its state. Each mode first runs
    memory_chunk + 1 untimed steps, so every kind of step (a chunk boundary included) is compiled,
    and captured, before timing; each mode continues the sequence where the previous one stopped.
    Each row goes to ``on_row`` as soon as it is measured (the caller saves it: a cut run keeps it)."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset, **model_options(arch), vocab_size=vocab, dropout=0.0)
    with torch.device("cuda"):
        model = build_model(cfg).cuda().eval()
    ids = torch.randint(0, vocab, (1, max(contexts)), device="cuda")
    warmup = cfg.memory_chunk + 1
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
                capacity = context + len(modes) * (warmup + new_tokens)
                row = {"arch": arch, "preset": preset, "batch": batch, "context": context}
                need = kv_cache_bytes(cfg, batch, capacity) if arch == "transformer" else 0
                torch.cuda.empty_cache()
                if need > 0.9 * torch.cuda.mem_get_info()[0]:
                    on_row({**row, "error": f"skipped: the KV cache needs {need / 1e9:.1f} GB, "
                                            f"{torch.cuda.mem_get_info()[0] / 1e9:.1f} GB free"})
                    continue
                try:
                    # reserved at batch 1, then repeated: one allocation of the big cache
                    state = copy_state(model.reserve(snapshots[context], capacity), batch)
                    token = ids[:, -1:].expand(batch, 1)

                    def eager(token):
                        nonlocal state
                        out = model(token, state=state)
                        state = out.state
                        return out.logits

                    seconds, peaks, decoder = {}, {}, None
                    for mode in modes:  # each continues the sequence where the previous mode left it
                        step = None  # the previous mode's decoder (graph pool, cast weights) is not this one's peak
                        torch.cuda.reset_peak_memory_stats()
                        if mode == "eager":
                            step = eager
                        else:
                            torch.compiler.reset()  # each decoder compiles afresh: no limit of recompilations
                            decoder = Decoder(model, state, capacity, cuda_graphs=True, compile=mode == "compiled")
                            step = decoder.step
                        _, token = decode_steps(step, token, warmup)
                        seconds[mode], token = decode_steps(step, token, new_tokens)
                        peaks[mode] = torch.cuda.max_memory_allocated()
                        if decoder is not None:  # it took over the state's tensors: continue from its buffers
                            state, decoder = decoder.state, None
                except torch.cuda.OutOfMemoryError:
                    on_row({**row, "error": "out of memory"})
                    continue
                finally:
                    state = decoder = step = None
                for mode, time_s in seconds.items():
                    speedup = {"speedup_vs_eager": round(seconds["eager"] / time_s, 1)} \
                        if mode != "eager" and "eager" in seconds else {}
                    on_row({**row, "mode": mode, "ms_per_token": round(time_s * 1e3, 3),
                            "tokens_per_s": round(batch / time_s, 1),
                            "state_MB": round(snapshots[context].nbytes() * batch / 1e6, 1),
                            "peak_GB": round(peaks[mode] / 1e9, 2), **speedup})
    del model, snapshots
    torch.cuda.empty_cache()


def decode_summary(rows: list[dict]) -> list[str]:
    """The issue-15 targets read off the graph (and compiled) rows: phase2 batch-1 ms/token per
    context (flat, ≤ 1 ms) and phase2 / transformer tokens/s per (batch, context) (≥ 5 at batch 64, 32K)."""
    lines = []
    for mode in DECODE_MODES[1:]:
        timed = {(r["arch"], r["batch"], r["context"]): r for r in rows if r.get("mode") == mode}
        ones = [r for (arch, batch, _), r in sorted(timed.items()) if arch == "phase2" and batch == 1]
        if ones:
            lines.append(f"phase2 batch 1, ms/token ({mode}): " +
                         ", ".join(f"{r['context']}: {r['ms_per_token']}" for r in ones))
        for (arch, batch, context), r in sorted(timed.items()):
            other = timed.get(("transformer", batch, context))
            if arch == "phase2" and other:
                lines.append(f"batch {batch}, context {context}: phase2 / transformer tokens/s ({mode}) = "
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


def main(argv: list[str] | None = None) -> dict | None:
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
    parser.add_argument("--decode-modes", default="eager,graph",
                        help=f"comma-separated, of {', '.join(DECODE_MODES)} (compiled: the Decoder's step "
                             "torch.compiled, then captured; about a minute of compilation per row and kind of step)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/throughput.json"))
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                        help="print the tables of these result files (written by earlier runs) and exit")
    parser.add_argument("--profile", nargs="?", const="base:32:1024", metavar="PRESET:BATCH:LENGTH",
                        help="training: also profile the eager step of --profile-arch at this setting (default base:32:1024) "
                             "and record its top GPU kernels")
    parser.add_argument("--profile-arch", default="phase2", choices=("phase2", *VARIANTS),
                        help="the arch --profile profiles")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: a smoke run of the training part only (its times mean nothing)")
    args = parser.parse_args(argv)
    bad = [m for m in args.modes.split(",") if m != "eager" and m not in COMPILE_MODES]
    if bad:
        parser.error(f"--modes: unknown {', '.join(bad)}; allowed: eager, {', '.join(COMPILE_MODES)}")
    bad = [m for m in args.decode_modes.split(",") if m not in DECODE_MODES]
    if bad:
        parser.error(f"--decode-modes: unknown {', '.join(bad)}; allowed: {', '.join(DECODE_MODES)}")
    unknown = [a for a in args.archs.split(",") if a not in (*ARCHS, *VARIANTS)]
    if unknown:
        parser.error(f"--archs: unknown {', '.join(unknown)}; allowed: {', '.join((*ARCHS, *VARIANTS))}")
    if args.report:
        reports = [json.loads(path.read_text()) for path in args.report]
        merged = {key: " / ".join(dict.fromkeys(str(r.get(key, "not recorded")) for r in reports))
                  for key in ("device", "torch", "triton", "date", "git_commit")}
        print_report({**merged, "profile": next((r["profile"] for r in reports if r.get("profile")), None),
                      **{part: merge_rows(reports, part) for part in ROW_IDENTITY}})
        return None
    parts = set(args.only or ("train", "op", "decode"))
    if args.device == "cpu" and parts != {"train"}:
        parser.error("--device cpu: runs the training part only; add --only train")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("throughput.py measures GPU speed: no CUDA device found")
    archs = args.archs.split(",")
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    start = time.perf_counter()
    report = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "triton": triton_version,
              **run_record(None if argv is None else ["benchmarks/throughput.py", *argv]),
              "dropout": 0.0, "warmup_steps": WARMUP, "timed_steps": REPEAT,
              "train": [], "op": [], "decode": [], "profile": None}

    def save():
        report["wall_s"] = round(time.perf_counter() - start, 1)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))

    if "train" in parts:
        for setting in args.settings:
            preset, batch, length = setting.split(":")
            for mode in args.modes.split(","):
                for arch in archs:
                    try:
                        row = train_step_benchmark(arch, preset, int(batch), int(length), mode, args.vocab_size,
                                                   args.device)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        row = {"arch": arch, "preset": preset, "batch": int(batch), "length": int(length),
                               "mode": mode, "error": "out of memory"}
                    except Exception as error:  # e.g. a compile failure: record it, keep the other rows
                        traceback.print_exc()
                        row = {"arch": arch, "preset": preset, "batch": int(batch), "length": int(length),
                               "mode": mode, "error": f"failed ({type(error).__name__})"}
                    report["train"].append(row)
                    print(row, flush=True)
                    add_ratios(report["train"])
                    save()
        if args.profile:
            preset, batch, length = args.profile.split(":")
            model, cfg = build(args.profile_arch, preset, int(length), args.vocab_size, args.device)
            report["profile"] = {"arch": args.profile_arch, "preset": preset, "batch": int(batch), "length": int(length),
                                 "mode": "eager", **profile_step.profile_training(
                                     model, cfg, int(batch), int(length), steps=3, top=15, device=args.device)}
            del model
            save()
    if "op" in parts:
        for batch, length in ((32, 1024), (4, 8192)):
            report["op"] += op_benchmark(batch, 8, length, 64, 64)
            save()
    if "decode" in parts:
        batches, contexts = [int(b) for b in args.decode_batches.split(",")], [int(c) for c in args.contexts.split(",")]

        def keep(row: dict) -> None:
            report["decode"].append(row)
            print(row, flush=True)
            save()

        for arch in (a for a in archs if a != "gpt"):  # the plain GPT is a training peer only
            decode_benchmark(arch, "base", batches, contexts, args.new_tokens, args.vocab_size,
                             tuple(args.decode_modes.split(",")), on_row=keep)
    save()
    print_report(report)
    return report


def print_report(report: dict) -> None:
    print(f"\n# {report['device']}, torch {report['torch']}, Triton {report.get('triton')}, {report['date']}, "
          f"commit {report.get('git_commit')}" + (" (dirty tree)" if report.get("git_dirty") else ""))
    if report["train"]:
        print("\n## Training step (forward + backward + fused AdamW, bf16 autocast, dropout 0 for every model): "
              "tokens/s (ratio to the faster of gpt and transformer in the same row)\n")
        print("\n".join(training_table(report["train"])))
    if report.get("profile") and report["profile"]["gpu_ms_per_step"] is not None:  # none on the CPU
        prof = report["profile"]
        print(f"\n## Top GPU kernels: {prof['arch']} {prof['preset']} B{prof['batch']} T{prof['length']} "
              f"{prof['mode']}, {prof['gpu_ms_per_step']:.2f} ms of GPU time per step\n")
        print("| share | ms / step | calls / step | kernel |\n| ---: | ---: | ---: | --- |")
        for row in prof["kernels"]:
            print(f"| {row['share']:.1%} | {row['ms_per_step']:.3f} | {row['calls_per_step']:.0f} | "
                  f"`{row['kernel'][:90]}` |")
    print_table("memory op, B H T D as given", report["op"])
    print_table("decoding (base preset, bf16 autocast; ms and tokens/s per one-token step of the batch)",
                report["decode"])
    for line in decode_summary(report["decode"]):
        print(line)


if __name__ == "__main__":
    main()
