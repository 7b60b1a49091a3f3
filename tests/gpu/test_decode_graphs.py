"""CUDA-graph decoding (breath.decoding) against plain eager calls, on a GPU (skipped without one).

    PYTHONPATH=src python -m pytest -q -n 0 tests/gpu/test_decode_graphs.py

Base preset, random init, bf16 autocast, batch 2: a 100-token prompt, then 256 greedy tokens
(crossing the memory's chunk boundaries at positions 127, 191, ...) through the graphs and through
plain ``model(token, state)`` calls with the same KV-cache capacity.
"""

import pytest
import torch

from breath import ModelConfig, build_model
from breath.decoding import Decoder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

PROMPT, NEW, VOCAB = 100, 256, 10000


@pytest.mark.parametrize("arch", ["phase2", "phase1", "transformer"])
@torch.no_grad()
def test_greedy_graph_decoding_is_token_identical_to_eager(arch):
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = build_model(ModelConfig.preset("base", arch=arch, vocab_size=VOCAB, dropout=0.0)).cuda().eval()
    prompt = torch.randint(0, VOCAB, (2, PROMPT), device="cuda", generator=torch.Generator("cuda").manual_seed(1))

    def greedy(graphs: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cuda", torch.bfloat16):
            out = model(prompt)
            token, tokens, logits = out.logits[:, -1:].argmax(-1), [], []
            if graphs:
                decoder = Decoder(model, out.state, capacity=PROMPT + NEW, cuda_graphs=True)
                step = decoder.step
            else:
                state = model.reserve(out.state, PROMPT + NEW)

                def step(token):
                    nonlocal state
                    out = model(token, state=state)
                    state = out.state
                    return out.logits
            for _ in range(NEW):
                tokens.append(token)
                step_logits = step(token)
                logits.append(step_logits.float().clone())
                token = step_logits[:, -1:].argmax(-1)
        return torch.cat(tokens, 1), torch.cat(logits, 1)

    eager_tokens, eager_logits = greedy(False)
    graph_tokens, graph_logits = greedy(True)
    difference = (graph_logits - eager_logits).abs().max().item()
    print(f"{arch}: max |graph - eager| logit difference over {NEW} steps: {difference:.3g}")
    assert torch.equal(graph_tokens, eager_tokens), f"{arch}: first differing step " \
        f"{(graph_tokens != eager_tokens).any(0).nonzero()[0].item()}, max logit difference {difference:.3g}"
    assert difference < 0.05 * eager_logits.abs().max().item()


@pytest.mark.parametrize("arch", ["phase2", "transformer"])
@torch.no_grad()
def test_compiled_graph_decoding_follows_eager(arch):
    """compile=True (inductor-fused step, then captured): teacher-forced on the same 128 tokens
    (two memory-chunk boundaries), the logits stay within bf16 rounding of the plain eager calls'
    and the greedy choice agrees at almost every step (fused kernels round in another order)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = build_model(ModelConfig.preset("base", arch=arch, vocab_size=VOCAB, dropout=0.0)).cuda().eval()
    ids = torch.randint(0, VOCAB, (2, PROMPT + 128), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    with torch.autocast("cuda", torch.bfloat16):
        out = model(ids[:, :PROMPT])
        state = model.reserve(out.state, ids.shape[1])
        decoder = Decoder(model, model(ids[:, :PROMPT]).state, capacity=ids.shape[1], compile=True)
        eager, compiled = [], []
        for t in range(PROMPT, ids.shape[1]):
            step = model(ids[:, t:t + 1], state=state)
            state = step.state
            eager.append(step.logits.float())
            compiled.append(decoder.step(ids[:, t:t + 1]).float().clone())
    eager, compiled = torch.cat(eager, 1), torch.cat(compiled, 1)
    difference = (compiled - eager).abs().max().item()
    agree = (compiled.argmax(-1) == eager.argmax(-1)).float().mean().item()
    print(f"{arch}: compiled graph vs eager over 128 steps: max logit difference {difference:.3g}, "
          f"greedy agreement {agree:.3f}")
    assert difference < 0.05 * eager.abs().max().item() and agree >= 0.95
