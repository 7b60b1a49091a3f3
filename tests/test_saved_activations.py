"""The activation-memory accounting (benchmarks/saved_activations.py): it finds what autograd keeps."""

import torch

from benchmarks import saved_activations
from breath import ModelConfig, build_model


def test_saved_tensors_are_attributed_to_their_modules():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="phase2", vocab_size=50, d_model=32, n_layers=2, n_seq=16, num_heads=2,
                                    head_dim=16, ffn_dim=64, memory_chunk=16, dropout=0.0))
    ids = torch.randint(0, 50, (3, 17))
    grouped = saved_activations.saved_bytes(model, ids, torch.bfloat16)
    # the float32 copy of the bf16 logits that the loss keeps: B·T·V·4 bytes, outside every module
    assert (3 * 16 * 50 * 4, (48, 50), "float32") in grouped["(loss, outside modules)"]
    # the short convolution keeps at least its (B, T + w − 1, 3·H·d) padded input in each layer, folded together
    assert sum(n for n, _, _ in grouped["blocks.memory.conv"]) >= 2 * 3 * (16 + 3) * 96 * 2
    # the hooks are gone and the model is unchanged: a plain forward still works
    assert model(ids).logits.shape == (3, 17, 50)
