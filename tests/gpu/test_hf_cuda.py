"""breath.hf on CUDA (Triton kernels): the transformers wrapper computes breath's logits and
greedy generate() equals breath's generate, every architecture.

    python -m pytest -q tests/gpu/test_hf_cuda.py
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", minversion="5.25.0")  # the hf extra's pin (breath.hf says why)
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from breath import ModelConfig, build_model  # noqa: E402
from breath.generate import generate  # noqa: E402
from breath.hf import BreathForCausalLM  # noqa: E402
from breath.sampling import SamplingSettings  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


@pytest.mark.parametrize("arch", ["phase2", "phase1", "transformer"])
def test_wrapper_on_cuda_matches_breath(arch, tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=1000, d_model=128, n_layers=2, num_heads=4, head_dim=32, ffn_dim=256,
                      n_seq=128, memory_chunk=64, dropout=0.0)
    model = build_model(cfg).cuda().eval()
    BreathForCausalLM.from_breath(model).save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="cuda")
    # Every tensor, the buffers that from_pretrained refills included (pe_gammas, the memory's basis).
    assert {t.device.type for t in (*loaded.parameters(), *loaded.buffers())} == {"cuda"}
    ids = torch.randint(0, 1000, (2, 300), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits.float(), rtol=0, atol=1e-5)
    prompt = ids[:1, :200]  # past n_seq: breath prefills in chunks, generate() in one call
    out = loaded.generate(prompt, max_new_tokens=32, do_sample=False, pad_token_id=0,
                          return_dict_in_generate=True, output_logits=True)
    steps = list(generate(model, prompt[0].tolist(), 32, SamplingSettings(0.0, None, 1.0)))
    assert out.sequences[0, 200:].tolist() == [step.token for step in steps]
    torch.testing.assert_close(torch.stack([logits[0].cpu() for logits in out.logits]),
                               torch.stack([step.logits for step in steps]).float(), rtol=0, atol=1e-4)
