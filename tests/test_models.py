"""The ground rules of DESIGN §2 for every architecture, the public interface (§8) and diagnostics (§6)."""

import re
import subprocess
import sys
import textwrap

import pytest
import torch

from breath import ModelConfig, build_model
from breath.errors import FieldError
from breath.models.diagnostics import MEMORY_STATS

ARCHS = ["phase2", "phase1", "transformer"]
# The ground rules also hold for phase2's other memory writes (the seed's, without convolution, and
# the key shift) and for its memory without consolidation.
RULE_ARCHS = [*ARCHS, "phase2-plain", "phase2-shift", "phase2-noconsolidation"]
VARIANTS = {"phase2-plain": dict(arch="phase2", memory_conv=0),
            "phase2-shift": dict(arch="phase2", memory_conv=0, memory_key_shift=True),
            "phase2-noconsolidation": dict(arch="phase2", consolidation=False)}
DIAGNOSTICS = ["mean_gamma", "std_gamma", "min_gamma", "max_gamma", *MEMORY_STATS]


@pytest.fixture
def tiny(tiny_model):
    """The shared tiny model (3+ memory chunks in a 40-token sequence) of an arch or a variant, in eval mode."""
    return lambda arch, **overrides: tiny_model(**{"arch": arch, **VARIANTS.get(arch, {}), **overrides}).eval()


def tokens(batch=2, length=40, seed=1):
    return torch.randint(0, 97, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", RULE_ARCHS)
def test_causal_earlier_logits_bit_identical(arch, tiny):
    model, ids = tiny(arch), tokens()
    base = model(ids).logits
    for j in (0, 5, 8, 21, 39):  # inside chunks and on chunk edges
        perturbed = ids.clone()
        perturbed[:, j] = (perturbed[:, j] + 1) % 97
        out = model(perturbed).logits
        assert torch.equal(out[:, :j], base[:, :j])
        assert not torch.equal(out[:, j], base[:, j])


@pytest.mark.parametrize("arch", RULE_ARCHS)
def test_per_sequence_independence(arch, tiny):
    model = tiny(arch).double()
    ids = tokens(batch=3)
    batched = model(ids).logits
    for i in range(3):
        alone = model(ids[i : i + 1]).logits
        assert torch.allclose(batched[i : i + 1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", RULE_ARCHS)
def test_no_hidden_state_between_calls(arch, tiny):
    model, ids = tiny(arch), tokens()
    first, second = model(ids), model(ids)
    assert torch.equal(first.logits, second.logits)


@pytest.mark.parametrize("arch", RULE_ARCHS)
@pytest.mark.parametrize("pieces", [[1] * 40, [3, 13, 1, 7, 16], [8, 8, 24]])
def test_recurrent_equals_parallel(arch, pieces, logits_in_pieces, tiny):
    model, ids = tiny(arch).double(), tokens()
    full = model(ids).logits
    stepped, state = logits_in_pieces(model, ids, pieces)
    assert state.pos == ids.shape[1]
    assert ((stepped - full).norm() / full.norm()).item() < 1e-9


@pytest.mark.parametrize("arch", RULE_ARCHS)
def test_gradients_reach_every_parameter(arch, tiny):
    model = tiny(arch).train()
    ids = tokens()
    logits = model(ids[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_and_backward_never_read_a_value_on_the_host(arch, tiny):
    # Meta tensors have no values: any .item(), bool(tensor) or data-dependent branch raises.
    # (DistributedDataParallel also relies on every parameter getting a gradient: see above.)
    model, ids = tiny(arch).to("meta"), tokens().to("meta")
    out = model(ids[:, :-1], return_diagnostics=True)
    torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    assert out.logits.is_meta and all(v.is_meta for k, v in out.diagnostics.items() if k != "per_layer")


@pytest.mark.parametrize("arch", ARCHS)
def test_built_under_a_default_device_every_tensor_is_there(arch, tiny):
    # The meta device stands in for CUDA (a kernel launch faults on a buffer left on the host).
    with torch.device("meta"):
        model = tiny(arch)
    assert {t.device.type for t in (*model.parameters(), *model.buffers())} == {"meta"}


@pytest.mark.parametrize("arch", ARCHS)
def test_runs_past_training_context(arch, tiny):
    model = tiny(arch, n_seq=16)
    assert model(tokens(batch=1, length=50)).logits.shape == (1, 50, 97)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_function_after_save_and_load_in_new_process(arch, tmp_path, tiny):
    model, ids = tiny(arch), tokens()
    path = tmp_path / "model.pt"
    torch.save({"config": model.cfg.to_dict(), "model": model.state_dict(), "ids": ids,
                "logits": model(ids).logits}, path)
    script = textwrap.dedent(f"""
        import torch
        from breath import ModelConfig, build_model
        ckpt = torch.load({str(path)!r}, weights_only=True)
        model = build_model(ModelConfig.from_dict(ckpt["config"])).eval()
        model.load_state_dict(ckpt["model"])
        assert torch.equal(model(ckpt["ids"]).logits, ckpt["logits"]), "different function"
        torch.manual_seed(0)
        rebuilt = build_model(ModelConfig.from_dict(ckpt["config"]))
        for key, value in rebuilt.state_dict().items():
            assert torch.equal(value, ckpt["model"][key]), "construction not deterministic: " + key
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("arch", ["phase2", "phase1"])
def test_full_resolvent_ablation_leaks_the_future_and_refuses_to_continue(arch, tiny):
    model, ids = tiny(arch, resolvent="full"), tokens()
    perturbed = ids.clone()
    perturbed[:, 30] = (perturbed[:, 30] + 1) % 97
    assert not torch.equal(model(perturbed).logits[:, :30], model(ids).logits[:, :30])
    with pytest.raises(ValueError, match="cannot continue"):
        model(ids[:, 5:], state=model(ids[:, :5]).state)


def test_phase2_diagnostics_present_and_sane_at_init(tiny):
    cfg_decay = 0.01
    model = tiny("phase2", base_decay=cfg_decay, n_layers=3)
    diag = model(tokens(), return_diagnostics=True).diagnostics
    for name in DIAGNOSTICS:
        assert diag[name].dim() == 0 and torch.isfinite(diag[name]), name
        assert diag["per_layer"][name].shape == (3,), name
    assert cfg_decay <= diag["min_gamma"] <= diag["mean_gamma"] <= diag["max_gamma"] <= 3 * cfg_decay
    assert 0 <= diag["low_snr_ratio"] <= 1 and 0 <= diag["lyapunov_stable_ratio"] <= 1
    assert 0 < diag["num_resonant_modes"] <= 8
    assert diag["mean_snr"] > 0 and diag["mean_fast_weight_energy"] > 0


def test_diagnostics_off_by_default_and_baselines_report_only_what_they_have(tiny):
    assert tiny("phase2")(tokens()).diagnostics == {}
    assert tiny("transformer")(tokens(), return_diagnostics=True).diagnostics == {}
    gamma_only = tiny("phase2-noconsolidation")(tokens(), return_diagnostics=True).diagnostics
    assert set(gamma_only) == {"mean_gamma", "std_gamma", "min_gamma", "max_gamma", "per_layer"}


def test_without_consolidation_is_phase2_with_neutral_consolidation(tiny):
    """--no-consolidation computes, bit for bit, the model whose consolidation takes only neutral
    actions (no boost, no Lyapunov step, every mode with energy kept): it skips work, not function."""
    neutral = dict(gamma_boost=1.0, eta_boost=1.0, resonance_threshold=0.0, lyapunov_gamma_step=0.0)
    off = tiny("phase2-noconsolidation")(tokens())
    on = tiny("phase2", **neutral)(tokens())
    assert torch.equal(off.logits, on.logits)


def test_public_interface_of_design_section_8():
    cfg = ModelConfig.preset("small", vocab_size=10000)
    assert (cfg.d_model, cfg.n_layers, cfg.n_seq, cfg.num_heads, cfg.head_dim, cfg.ffn_dim) == (256, 4, 512, 4, 64, 1024)
    base, large = ModelConfig.preset("base"), ModelConfig.preset("large")
    assert (base.d_model, base.n_layers, base.n_seq, base.num_heads, base.ffn_dim) == (512, 6, 1024, 8, 2048)
    assert (large.d_model, large.n_layers, large.n_seq, large.num_heads, large.ffn_dim) == (1024, 12, 2048, 16, 4096)
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small", vocab_size=500, n_layers=1)).eval()
    out = model(torch.randint(0, 500, (2, 70)), state=None, return_diagnostics=True)
    assert out.logits.shape == (2, 70, 500) and out.state.pos == 70 and "mean_snr" in out.diagnostics
    out2 = model(torch.randint(0, 500, (2, 3)), state=out.state)
    assert out2.logits.shape == (2, 3, 500) and out2.state.pos == 73
    from breath.ops import bk_resolvent

    a = torch.complex(torch.randn(3, 5), -torch.ones(3, 5))
    assert bk_resolvent(a, torch.ones(3, 4), torch.ones(3, 4), 1j, causal=True).shape == (3, 5)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_model_cast_to_bfloat16_runs_and_continues(arch, tiny):
    model = tiny(arch).to(torch.bfloat16)
    out = model(tokens())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()
    assert torch.isfinite(model(tokens(length=3), state=out.state).logits).all()


@pytest.mark.parametrize("field,value", [
    ("arch", "rnn"), ("d_model", 0), ("n_layers", -1), ("num_heads", 2.5), ("head_dim", 7),
    ("dropout", 1.0), ("resolvent", "acausal"), ("base_decay", 0.0), ("hebbian_eta", -0.1), ("snr_threshold", 0),
    ("resonance_threshold", 1.5), ("memory_chunk", 0), ("lyapunov_tolerance", 0.5), ("d_model", 2050),
    ("memory_key_shift", "yes"), ("zeta_init", 1), ("memory_conv", 1), ("memory_conv", True),
    ("power_warm_start", 1), ("power_iterations", 0), ("max_gamma", 0.005), ("consolidation", "off"),
    ("use_triton", True), ("use_triton", None), ("use_triton", "force"),
])
def test_validation_names_the_field(field, value):
    with pytest.raises(FieldError, match=f"^{field}: got {value!r}") as info:
        ModelConfig(**{field: value}).validate()
    assert info.value.field == field and info.value.message.startswith(f"got {value!r}; allowed: ")


def test_use_triton_modes():
    """auto | on | off everywhere; the ops still take the Python values of before (None, True, False);
    a saved config's null/true meant "Triton where it runs" (auto), false off."""
    from breath.layers.bk import BKCore
    from breath.models.config import upgrade_saved
    from breath.ops.backend import triton_mode

    assert [triton_mode(v) for v in ("auto", "on", "off", None, True, False)] == ["auto", "on", "off"] * 2
    with pytest.raises(ValueError, match="^" + re.escape("use_triton: got 'yes'; allowed: auto | on | off")):
        triton_mode("yes")
    assert [upgrade_saved({"use_triton": v})["use_triton"] for v in (None, True, False, "on")] == [
        "auto", "auto", "off", "on"]
    assert ModelConfig.from_dict({"use_triton": True}).validate().use_triton == "auto"
    # the full resolvent has no kernel: "on" is an error, in the config and in the layer
    message = "use_triton: got 'on'; allowed: auto | off with resolvent='full'"
    with pytest.raises(FieldError, match="^" + re.escape(message)):
        ModelConfig(resolvent="full", use_triton="on").validate()
    with pytest.raises(FieldError, match="^use_triton: got 'on' with the full"):
        BKCore(8, 2, 0.01, causal=False, use_triton="on")
    assert BKCore(8, 2, 0.01, causal=False).use_triton == "off"


def test_auto_on_a_cuda_device_without_triton_says_so_once(monkeypatch):
    """``use_triton="auto"`` falling back to PyTorch on CUDA (Triton missing, or a GPU below Ampere)
    warns once per process and reason; on the CPU the reference is the expected choice: no note."""
    import warnings
    from types import SimpleNamespace

    from breath.ops import backend

    monkeypatch.setattr(backend, "triton_available", lambda: False)
    monkeypatch.setattr(backend, "_capability", lambda index: (9, 0))
    backend._warn_once.cache_clear()
    on_cuda = SimpleNamespace(is_cuda=True, device=SimpleNamespace(index=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [backend.kernels_fit(on_cuda) for _ in range(3)] == [False] * 3
        assert backend.kernels_fit(torch.zeros(1)) is False
        monkeypatch.setattr(backend, "_capability", lambda index: (7, 5))
        assert backend.kernels_fit(on_cuda) is False
    assert [str(w.message) for w in caught] == [
        "use_triton='auto': Triton is not installed; the PyTorch reference path runs (slower)",
        "use_triton='auto': CUDA device 0 has compute capability (7, 5), below the kernels' 8.0; the PyTorch "
        "reference path runs (slower)"]
    backend._warn_once.cache_clear()


def test_a_fallback_met_inside_a_compile_is_said_by_the_next_eager_call(monkeypatch):
    """Dynamo cannot trace warnings.warn: the note is skipped while compiling, and not counted as said."""
    import warnings

    from breath.ops import backend

    backend._warn_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        backend.note_fallback("a reason")
        assert caught == []
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
        backend.note_fallback("a reason")
        backend.note_fallback("a reason")
    assert [str(w.message) for w in caught] == ["use_triton='auto': a reason; the PyTorch reference path runs (slower)"]
    backend._warn_once.cache_clear()

def test_auto_says_when_a_shape_or_dtype_has_no_kernel(monkeypatch):
    """On a device that runs the kernels, ``auto`` with a head_dim, chunk or dtype the kernels do not
    compile for takes the PyTorch path and says so once (not silently: it is ~100x slower there)."""
    import importlib
    import warnings

    from breath.ops import backend
    from breath.ops.consolidation import ConsolidationConfig

    # the modules (breath.ops exports functions of the same names)
    bk_resolvent, dissipative_memory, short_conv = (importlib.import_module(f"breath.ops.{name}") for name in
                                                    ("bk_resolvent", "dissipative_memory", "short_conv"))

    for module in (bk_resolvent, dissipative_memory, short_conv):
        monkeypatch.setattr(module, "kernels_fit", lambda x: True)  # as on a CUDA GPU
    backend._warn_once.cache_clear()
    q = torch.randn(1, 2, 5, 8)  # head_dim 8: below the kernels' 16
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            dissipative_memory.dissipative_memory(q, q, q, torch.rand(1, 2, 5), 0.1, torch.eye(8),
                                                  ConsolidationConfig(chunk=16), use_triton="auto")
        short_conv.short_conv(torch.randn(1, 5, 4, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64),
                              use_triton="auto")
        assert not bk_resolvent.uses_triton("auto", True, torch.complex128, q)
        assert not bk_resolvent.uses_triton("auto", False, torch.complex64, q)  # full resolvent: no kernel, no note
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3 and all(m.startswith("use_triton='auto': ") for m in messages)
    assert "not head_dim 8, memory_chunk 16" in messages[0]
    assert "float64" in messages[1] and "complex128" in messages[2]
    backend._warn_once.cache_clear()


def test_triton_import_errors_other_than_its_absence_propagate(monkeypatch):
    """Only a missing ``triton`` module counts as "not available"; a broken install is an error."""
    import builtins

    from breath.ops import backend

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "triton":
            raise failure
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    for failure, available in ((ModuleNotFoundError("No module named 'triton'", name="triton"), False),
                               (ImportError("libcuda.so.1: cannot open shared object file"), None)):
        backend.triton_available.cache_clear()
        if available is None:
            with pytest.raises(ImportError, match="libcuda"):
                backend.triton_available()
        else:
            assert backend.triton_available() is available
    backend.triton_available.cache_clear()


def test_max_gamma_bounds_gamma_smoothly_with_exact_gradients(tiny):
    from breath.layers.bk import BKCore

    free, bounded = BKCore(8, 2, 0.01), BKCore(8, 2, 0.01, max_gamma=0.1)
    u = torch.linspace(-12, 12, 101, dtype=torch.float64)
    g_free, g_bounded = free.forgetting_rate(u), bounded.forgetting_rate(u)
    assert (g_bounded <= 0.1).all() and (g_bounded >= 0.01).all() and (g_bounded.diff() >= 0).all()
    assert (g_bounded[u <= 0].diff() > 0).all()  # strictly increasing until it saturates
    assert g_free.max() > 1  # what the bound removes
    near = g_free < 0.02  # around the initial Γ ≈ 2·base_decay the bound changes Γ by < 0.5%
    torch.testing.assert_close(g_bounded[near], g_free[near], rtol=5e-3, atol=0)
    assert torch.autograd.gradcheck(bounded.forgetting_rate, u[::10].clone().requires_grad_())
    model = tiny("phase2", max_gamma=0.03)
    with torch.no_grad():
        model.blocks[0].bk.forgetting.bias.fill_(5.0)  # softplus ≈ 5: far above the bound
    assert model(tokens(), return_diagnostics=True).diagnostics["max_gamma"] <= 0.03


def test_unknown_preset_lists_the_allowed():
    with pytest.raises(ValueError, match="small, base, large"):
        ModelConfig.preset("huge")


@pytest.mark.parametrize("conv", [0, 3])
def test_memory_layer_writes_what_its_options_say(conv, tiny):
    """The layer's op sees q, k, v from the short convolution of the projections (none for conv=0);
    with the key shift it sees keys (0, k_0, …, k_{T−2}) and the next call starts from k_{T−1}.
    Checked against the op called directly."""
    from breath.ops.dissipative_memory import dissipative_memory

    model = tiny("phase2", memory_conv=conv)
    layer = model.blocks[0].memory
    torch.manual_seed(3)
    x, gamma = torch.randn(2, 13, 32), torch.rand(2, 13, 2) * 0.1
    qkv = layer.qkv(x) if not conv else layer.conv(layer.qkv(x), None)[0]
    q, k, v = qkv.view(2, 13, 3, 2, 8).permute(2, 0, 3, 1, 4)
    k = torch.nn.functional.normalize(k, dim=-1)
    for shift, keys in ((True, torch.cat((torch.zeros_like(k[:, :, :1]), k[:, :, :-1]), 2)), (False, k)):
        layer.key_shift = shift
        y, state, _ = layer(x, gamma, 0, None)
        o, memory, _ = dissipative_memory(q, keys, v, gamma.transpose(1, 2), layer.eta, layer.basis,
                                          layer.consolidation)
        expected = layer.out(layer.norm(o).transpose(1, 2).reshape(2, 13, -1))
        torch.testing.assert_close(y, expected)
        torch.testing.assert_close(state.memory.S, memory.S)
        assert (state.last_key is None) if not shift else torch.equal(state.last_key, k[:, :, -1])
        assert (state.conv_tail is None) if not conv else state.conv_tail.shape == (2, conv - 1, 48)


@pytest.mark.parametrize("conv", [0, 3])
def test_memory_layer_keeps_no_view_of_its_projections_for_the_backward(conv, tiny):
    """q and v are copied out of the (convolved) projections, so the memory op's saved q and v do not
    keep the key third of that tensor alive; its gradients are unchanged (checked above and in
    the recurrent = parallel tests)."""
    # the kernel path, which saves q and v as given
    model = tiny("phase2", memory_conv=conv, use_triton="on", num_heads=2, head_dim=16, memory_chunk=16)
    layer = model.blocks[0].memory
    produced = []
    source = layer.conv if conv else layer.qkv
    source.register_forward_hook(lambda module, inputs, output: produced.append(
        (output[0] if conv else output).untyped_storage().data_ptr()))
    saved = []
    x = torch.randn(2, 13, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.untyped_storage().data_ptr()) or t,
                                                  lambda t: t):
        y, _, _ = layer(x, torch.rand(2, 13, 2) * 0.1, 0, None)
    assert len(produced) == 1 and produced[0] not in saved
    y.sum().backward()
    assert x.grad is not None

    from breath.layers.memory import SplitHeads

    qkv = torch.randn(2, 5, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert all(torch.equal(ours, theirs) for ours, theirs in
               zip(SplitHeads.apply(qkv), qkv.permute(2, 0, 3, 1, 4).unbind(0), strict=True))
    assert torch.autograd.gradcheck(SplitHeads.apply, (qkv,))


@pytest.mark.parametrize("missing, shift", [(("memory_key_shift", "memory_conv"), None), (("memory_conv",), True)])
def test_configs_saved_before_the_memory_options_load_as_saved(missing, shift):
    """A checkpoint or export written before ``memory_key_shift`` (first sessions) or ``memory_conv``
    (2026-11-30, when the key shift was the default) existed described a model without them: loading
    it must rebuild that model, not today's default."""
    from breath.train.config import checkpoint_options

    saved = {k: v for k, v in ModelConfig().to_dict().items() if k not in missing}
    if shift is not None:
        saved["memory_key_shift"] = shift
    assert ModelConfig().memory_conv == 4
    for loaded in (ModelConfig.from_dict(saved).to_dict(), checkpoint_options({"model": saved})):
        assert loaded["memory_conv"] == 0
        assert loaded["memory_key_shift"] is bool(shift)


def test_configs_saved_before_the_warm_start_load_as_saved():
    """Configs written before ``power_warm_start`` ran the power iteration cold (8 steps, saved in
    the config): they load cold, with their saved step count, and the layer gets that config."""
    from breath.ops.consolidation import ConsolidationConfig

    saved = {k: v for k, v in ModelConfig().to_dict().items() if k != "power_warm_start"}
    saved["power_iterations"] = 8
    loaded = ModelConfig.from_dict(saved)
    assert ModelConfig().power_warm_start and not loaded.power_warm_start and loaded.power_iterations == 8
    consolidation = ConsolidationConfig.from_model(loaded)
    assert not consolidation.power_warm_start and consolidation.power_iterations == 8


def test_consolidation_settings_come_from_the_model_config_by_name():
    """Each consolidation setting is one flat ModelConfig field (the names of saved configs and of the
    command line) defaulting to the op's default, and a model's memory layers get exactly its values."""
    import dataclasses

    from breath.ops.consolidation import ConsolidationConfig

    op_fields = {f.metadata.get("model_field", f.name): f.name for f in dataclasses.fields(ConsolidationConfig)}
    model_defaults = ModelConfig().to_dict()
    assert set(op_fields) <= set(model_defaults)
    for model_name, op_name in op_fields.items():
        assert model_defaults[model_name] == getattr(ConsolidationConfig(), op_name)
    changed = {"memory_chunk": 8, "snr_threshold": 1.25, "gamma_boost": 3.0, "eta_boost": 1.25,
               "resonance_threshold": 0.3, "lyapunov_gamma_step": 0.5, "lyapunov_tolerance": 2.5,
               "power_iterations": 7, "power_warm_start": False, "consolidation": False}
    assert set(changed) == set(op_fields)  # a new setting needs a value here too
    cfg = ModelConfig.from_dict({**ModelConfig(d_model=32, num_heads=2, head_dim=16, n_layers=1).to_dict(),
                                 **changed})
    memory = build_model(cfg).blocks[0].memory.consolidation
    assert memory == ConsolidationConfig(**{op_fields[name]: value for name, value in changed.items()})


@pytest.mark.parametrize("arch", ["phase2", "phase1", "phase2-shift"])
def test_recurrent_state_owns_its_memory(arch, tiny):
    """Every tensor of a phase2/phase1 state holds only its own elements: a view into the call's
    activations would keep them alive, and the state would grow with the context it was built from."""
    model = tiny(arch)
    state = model(tokens(length=40)).state
    for tensor in (t for layer in state.layers for t in torch.utils._pytree.tree_leaves(layer)
                   if isinstance(t, torch.Tensor)):
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def test_unit_keys_are_f_normalize_with_a_smaller_backward():
    """UnitKeys gives F.normalize's values and gradients (a zero row included, where the floor ε
    makes it linear), and keeps no float32 copy of a bf16 input for the backward."""
    from breath.layers.memory import UnitKeys

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    x[0, 0, 0] = 0
    weight = torch.randn_like(x)

    def value_and_grad(fn):
        leaf = x.clone().requires_grad_()
        y = fn(leaf)
        (y * weight).sum().backward()
        return y.detach(), leaf.grad

    ours = value_and_grad(UnitKeys.apply)
    reference = value_and_grad(lambda t: torch.nn.functional.normalize(t, dim=-1))
    torch.testing.assert_close(ours[0], reference[0], rtol=1e-15, atol=0)
    torch.testing.assert_close(ours[1], reference[1], rtol=1e-12, atol=0)
    assert torch.autograd.gradcheck(UnitKeys.apply, (x[1:].clone().requires_grad_(),))

    saved = []
    low = torch.randn(2, 3, 5, 8, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = UnitKeys.apply(low)
    assert y.dtype == torch.float32 and [t.shape[-1] for t in saved] == [8, 1]  # y and ‖x‖ only
    y.sum().backward()
    assert low.grad.dtype == torch.bfloat16


def test_bk_potential_and_forgetting_are_one_product_keeping_one_copy_of_x():
    """BKCore computes V and Γ by one product with W_V and W_Γ stacked: the values of the two Linears,
    and under bf16 autocast a single bf16 copy of its (B, T, d) input kept for the backward."""
    import torch.nn.functional as F

    from breath.layers.bk import BKCore

    torch.manual_seed(0)
    bk = BKCore(32, 4, base_decay=0.05).double()
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    _, gamma, _ = bk(x)
    torch.testing.assert_close(gamma, F.softplus(bk.forgetting(x)) + 0.05, rtol=1e-14, atol=0)

    saved = []
    bk = BKCore(32, 4, base_decay=0.05)
    with torch.autocast("cpu", torch.bfloat16), \
            torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bk(torch.randn(2, 7, 32, requires_grad=True))
    assert sum(t.shape == (14, 32) and t.dtype == torch.bfloat16 for t in saved) == 1


@pytest.mark.parametrize("op", ["bk_resolvent", "dissipative_memory", "short_conv"])
def test_kernels_asked_for_on_cpu_say_how_to_run_them(op, monkeypatch):
    """use_triton="on" on CPU tensors outside Triton's interpreter: one clear error naming the op and
    the way out, not Triton's "0 active drivers"."""
    pytest.importorskip("triton")
    from breath.ops.bk_resolvent import bk_resolvent
    from breath.ops.consolidation import ConsolidationConfig
    from breath.ops.dissipative_memory import dissipative_memory
    from breath.ops.short_conv import short_conv

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(1, 1, 4, 16)
    calls = {
        "bk_resolvent": lambda: bk_resolvent(torch.randn(2, 4, dtype=torch.complex64), 1.0, 1.0, 1j, use_triton="on"),
        "dissipative_memory": lambda: dissipative_memory(x, x, x, torch.rand(1, 1, 4), 0.1, torch.eye(16),
                                                         ConsolidationConfig(chunk=16), use_triton="on"),
        "short_conv": lambda: short_conv(x[0], torch.randn(16, 4), use_triton="on"),
    }
    with pytest.raises(RuntimeError, match=f"^{op}: use_triton='on' needs CUDA tensors, or TRITON_INTERPRET=1"):
        calls[op]()
