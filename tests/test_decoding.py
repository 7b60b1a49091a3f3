"""breath.decoding: the static-buffer decode step (what a CUDA graph replays) against plain model
calls and a full re-run, and the transformer's preallocated KV cache.

On the CPU the decoder runs its step eagerly on the same buffers and with the same frozen host
positions as the graphs; the graphs themselves are checked on a GPU by tests/gpu/test_decode_graphs.py.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # for the Triton-kernel case; set before triton is imported

import pytest  # noqa: E402

from breath.decoding import Decoder  # noqa: E402
from breath.models import ModelState  # noqa: E402

ARCHS = ["phase2", "phase1", "transformer", "phase2-shift", "phase2-noconsolidation"]
VARIANTS = {"phase2-shift": dict(arch="phase2", memory_conv=0, memory_key_shift=True),
            "phase2-noconsolidation": dict(arch="phase2", consolidation=False)}


@pytest.fixture
def tiny(tiny_model):
    """float64, memory chunks of 8: a 30-token decode crosses several boundaries."""
    return lambda arch, **overrides: tiny_model(**{"arch": arch, **VARIANTS.get(arch, {}), **overrides}).double().eval()


def copy_state(state: ModelState) -> ModelState:
    return ModelState(state.pos, torch.utils._pytree.tree_map(
        lambda t: t.clone() if isinstance(t, torch.Tensor) else t, state.layers))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("prompt_length", [3, 11])
@torch.no_grad()
def test_decoder_steps_equal_plain_calls_and_a_full_rerun(arch, prompt_length, tiny):
    """30 steps from a 3- or 11-token prompt (chunk 8: both kinds of step, each replayed at several
    positions after its first): the same logits as plain ``model(token, state)`` calls (with the
    same KV-cache capacity), bit for bit, and as one forward of the whole sequence. The 3-token
    prompt has crossed no boundary, so its memory state still has fields sharing one zeros tensor."""
    model, steps = tiny(arch), 30
    ids = torch.randint(0, 97, (2, prompt_length + steps), generator=torch.Generator().manual_seed(1))
    prefill = model(ids[:, :prompt_length])
    plain, state, decoded = [], model.reserve(copy_state(prefill.state), prompt_length + steps), []
    decoder = Decoder(model, prefill.state, capacity=prompt_length + steps)
    for t in range(prompt_length, prompt_length + steps):
        out = model(ids[:, t:t + 1], state=state)
        plain.append(out.logits)
        state = out.state
        decoded.append(decoder.step(ids[:, t:t + 1]).clone())
    decoded, plain = torch.cat(decoded, 1), torch.cat(plain, 1)
    assert torch.equal(decoded, plain)
    full = model(ids).logits[:, prompt_length:]
    assert ((decoded - full).norm() / full.norm()).item() < 1e-12
    assert decoder.pos == decoder.state.pos == prompt_length + steps
    # the decoder's state continues like the plain one
    tail = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(tail, state=decoder.state).logits, model(tail, state=state).logits,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ["phase2", "transformer"])
@torch.no_grad()
def test_decoder_under_autocast_casts_the_weights_once(arch, tiny_model):
    """Under bf16 autocast the decoder runs on Linear weights it cast once: the logits equal plain
    autocast calls bit for bit, no step casts a Linear weight again, and the tied embedding (the LM
    head's weight) stays float32. Autocast's own weight cache is off, as in a CUDA-graph capture
    (with it on, the prefill's casts would be reused and no step would cast anyway)."""
    model = tiny_model(arch=arch).eval()
    ids = torch.randint(0, 97, (2, 14), generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", torch.bfloat16, cache_enabled=False):
        prefill = model(ids[:, :4])
        state, plain, decoded = model.reserve(copy_state(prefill.state), 14), [], []
        decoder = Decoder(model, prefill.state, capacity=14)
        for t in range(4, 14):
            out = model(ids[:, t:t + 1], state=state)
            plain.append(out.logits)
            state = out.state
            if t == 5:  # after the first step: count the casts of one step (weights: 2-D float32 → bf16)
                with torch.profiler.profile(record_shapes=True) as prof:
                    decoded.append(decoder.step(ids[:, t:t + 1]).clone())
            else:
                decoded.append(decoder.step(ids[:, t:t + 1]).clone())
    assert torch.equal(torch.cat(decoded, 1), torch.cat(plain, 1))
    weight_shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    casts = [e for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes
             and tuple(e.input_shapes[0]) in weight_shapes]
    assert casts == [], [e.input_shapes for e in casts]
    assert model.embed.weight.dtype == torch.float32 and model.head.weight is model.embed.weight


@torch.no_grad()
def test_a_float64_model_under_autocast_decodes_as_plain_calls(tiny):
    """Autocast leaves float64 alone, and so does the decoder's one-time cast: a float64 model under
    bf16 autocast gives the plain calls' logits."""
    model = tiny("phase2")
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", torch.bfloat16):
        prefill = model(ids[:, :4])
        decoder, state = Decoder(model, copy_state(prefill.state), capacity=12), prefill.state
        for t in range(4, 12):
            out = model(ids[:, t:t + 1], state=state)
            state = out.state
            torch.testing.assert_close(decoder.step(ids[:, t:t + 1]), out.logits, rtol=1e-12, atol=1e-12)

@pytest.mark.parametrize("arch", ["phase2", "transformer"])
@torch.no_grad()
def test_compiled_decoder_matches_the_plain_one(arch, tiny):
    """compile=True: the step compiled by inductor (both kinds of step for phase2; the KV cache
    written in place inside the compiled call for the transformer) gives the uncompiled decoder's
    logits and state to rounding, compiling once per kind of step."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model, prompt, steps = tiny(arch), 5, 12
    ids = torch.randint(0, 97, (2, prompt + steps), generator=torch.Generator().manual_seed(4))
    prefill = model(ids[:, :prompt])
    plain = Decoder(model, copy_state(prefill.state), capacity=prompt + steps)
    compiled = Decoder(model, copy_state(prefill.state), capacity=prompt + steps, compile=True)
    for t in range(prompt, prompt + steps):
        torch.testing.assert_close(compiled.step(ids[:, t:t + 1]), plain.step(ids[:, t:t + 1]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(compiled.state.layers, plain.state.layers, rtol=1e-10, atol=1e-12)
    kinds = 2 if arch == "phase2" else 1
    assert len(compiled._host_pos) == kinds
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == kinds  # compiled, once per kind


@torch.no_grad()
def test_decoder_with_the_triton_memory_kernel(tiny):
    """The memory kernel gets the host position (its place in the chunk): a step replayed at other
    places of the chunk, as a graph does, still equals plain calls (to float32 rounding: the kernel
    takes float32, and some CPUs' BLAS round the decoder's static buffers differently from the
    plain calls' fresh tensors by an ulp or two, far below what a wrong place in the chunk changes)."""
    pytest.importorskip("triton", reason="triton is not installed")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: Triton's interpreter
    model = tiny("phase2", num_heads=1, head_dim=16, memory_chunk=16, use_triton="on").float().to(device)
    ids = torch.randint(0, 97, (1, 5 + 20), generator=torch.Generator().manual_seed(1)).to(device)
    prefill = model(ids[:, :5])
    decoder = Decoder(model, copy_state(prefill.state), capacity=ids.shape[1], cuda_graphs=False)
    state = prefill.state
    for t in range(5, ids.shape[1]):
        out = model(ids[:, t:t + 1], state=state)
        state = out.state
        torch.testing.assert_close(decoder.step(ids[:, t:t + 1]), out.logits, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_kv_cache_is_preallocated_and_written_in_place(tiny):
    model = tiny("transformer")
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    state = model.reserve(model(ids[:, :4]).state, 20)
    buffers = [t.data_ptr() for cache in state.layers for t in cache]
    assert all(t.shape[2] == 20 for cache in state.layers for t in cache)
    outs = []
    for t in range(4, 20):
        out = model(ids[:, t:t + 1], state=state)
        state = out.state
        outs.append(out.logits)
    assert [t.data_ptr() for cache in state.layers for t in cache] == buffers  # no copy, no reallocation
    torch.testing.assert_close(torch.cat(outs, 1), model(ids).logits[:, 4:], rtol=1e-12, atol=1e-12)


@torch.no_grad()
def test_kv_cache_grows_by_doubling_without_a_reserve(tiny):
    model = tiny("transformer")
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(1))
    state, capacities = model(ids[:, :3]).state, []
    for t in range(3, 12):
        state = model(ids[:, t:t + 1], state=state).state
        capacities.append(state.layers[0][0].shape[2])
    assert capacities == [6, 6, 6, 12, 12, 12, 12, 12, 12]


@torch.no_grad()
def test_decoder_refuses_what_it_cannot_do(tiny):
    model = tiny("phase1")
    state = model(torch.tensor([[1, 2, 3]])).state
    with pytest.raises(ValueError, match="^cuda_graphs: got True"):
        Decoder(model, state, capacity=8, cuda_graphs=True)
    with pytest.raises(ValueError, match="^capacity: got 3"):
        Decoder(model, state, capacity=3)
    decoder = Decoder(model, state, capacity=4)
    decoder.step(torch.tensor([[4]]))
    with pytest.raises(ValueError, match="^capacity: the decoder was built for 4 tokens"):
        decoder.step(torch.tensor([[5]]))
    with pytest.raises(ValueError, match="^capacity: got 2"):
        tiny("transformer").reserve(tiny("transformer")(torch.tensor([[1, 2, 3]])).state, 2)
    full = tiny("phase2", resolvent="full")
    with pytest.raises(ValueError, match="resolvent='full'"):
        Decoder(full, state, capacity=8)


@torch.no_grad()
def test_decoder_refuses_a_step_that_changes_the_states_dtype(tiny):
    """A prefill without autocast and steps under it would change the state's dtype: said, not cast."""
    model = tiny("phase2").float()
    decoder = Decoder(model, model(torch.tensor([[1, 2, 3]])).state, capacity=8)
    with torch.autocast("cpu", torch.bfloat16), pytest.raises(RuntimeError, match="same autocast setting"):
        decoder.step(torch.tensor([[4]]))


@torch.no_grad()
def test_a_reserved_kv_cache_is_not_copied_again(tiny):
    """Decoding from a cache already reserved to the capacity keeps one copy of it (at 32K context and
    batch 64 the cache is 26 GB): the decoder steps in the state's own buffers."""
    model = tiny("transformer")
    state = model.reserve(model(torch.tensor([[1, 2, 3]])).state, 16)
    assert model.reserve(state, 16) is state and model.reserve(state, 8) is state
    decoder = Decoder(model, state, capacity=16)
    keys = state.layers[0][0]
    assert decoder.state.layers[0][0].data_ptr() == keys.data_ptr()
    assert model.reserve(state, 32).layers[0][0].shape[2] == 32  # more room: a new buffer
