"""Hugging Face interoperability: ``breath.hf`` (Auto classes, generate() on a BreathCache),
``breath export --format hf`` and the lm-evaluation-harness task it writes.

Needs the ``hf`` extra (``dev`` includes it). The export and lm_eval tests use the tiny phase2 run
of tests/test_inference.py (trained once per session).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from breath import ModelConfig, build_model  # noqa: E402
from breath.data.corpora import load_corpus, split_documents  # noqa: E402
from breath.data.tokenizer import EOT  # noqa: E402
from breath.data.windows import encode_documents  # noqa: E402
from breath.generate import generate  # noqa: E402
from breath.hf import BreathCache, BreathForCausalLM  # noqa: E402
from breath.lm_eval_tasks import task_name  # noqa: E402
from breath.sampling import SamplingSettings  # noqa: E402
from breath.runs import load_run  # noqa: E402

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

ARCHS = ("phase2", "phase1", "transformer")
GREEDY = SamplingSettings(0.0, None, 1.0)


def tiny(arch: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=300, d_model=64, n_layers=2, num_heads=2, head_dim=32, ffn_dim=128,
                      n_seq=32, memory_chunk=16, dropout=0.0, **overrides)
    return build_model(cfg).eval()


@pytest.fixture(scope="module", params=ARCHS)
def saved(request, tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """(a tiny breath model of each arch, the directory its wrapper was saved to with save_pretrained)."""
    model = tiny(request.param)
    directory = tmp_path_factory.mktemp(f"hf-{request.param}")
    BreathForCausalLM.from_breath(model).save_pretrained(directory)
    return model, directory


def test_auto_classes_load_the_same_function(saved):
    model, directory = saved
    assert isinstance(AutoConfig.from_pretrained(directory), transformers.PretrainedConfig)
    loaded = AutoModelForCausalLM.from_pretrained(directory)
    assert isinstance(AutoModel.from_pretrained(directory), BreathForCausalLM)
    assert loaded.model.head.weight is loaded.model.embed.weight  # tied again after loading
    ids = torch.randint(0, 300, (2, 45), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(ids).logits, loaded(ids).logits
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=1e-5)
    labels = ids.clone()
    labels[0, 10] = -100
    loss = F.cross_entropy(expected.float()[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, labels=labels).loss, loss, rtol=1e-6, atol=1e-6)


def test_cache_continues_like_one_pass(saved):
    """Feeding a sequence in pieces through the HF API (a BreathCache) gives the one-pass logits."""
    _, directory = saved
    loaded = AutoModelForCausalLM.from_pretrained(directory)
    ids = torch.randint(0, 300, (2, 45), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = loaded(ids, use_cache=False)
        first = loaded(ids[:, :20], use_cache=True)
        assert isinstance(first.cache, BreathCache) and first.cache.get_seq_length() == 20
        second = loaded(ids[:, 20:], cache=first.cache, use_cache=True)
    assert second.cache.get_seq_length() == 45
    assert whole.cache is None
    torch.testing.assert_close(torch.cat((first.logits, second.logits), dim=1), whole.logits, rtol=0, atol=1e-5)


def test_greedy_generate_equals_breath_generate(saved):
    """32 greedy tokens from a 40-token prompt (past n_seq and two memory chunks): the same tokens,
    and at every step the same logits, as breath's generate (which prefills in n_seq chunks)."""
    model, directory = saved
    loaded = AutoModelForCausalLM.from_pretrained(directory)
    prompt = torch.randint(0, 300, (1, 40), generator=torch.Generator().manual_seed(3))
    out = loaded.generate(prompt, max_new_tokens=32, do_sample=False, return_dict_in_generate=True,
                          output_logits=True, pad_token_id=0)
    steps = list(generate(model, prompt[0].tolist(), 32, GREEDY))
    assert out.sequences[0, 40:].tolist() == [step.token for step in steps]
    torch.testing.assert_close(torch.stack([logits[0] for logits in out.logits]),
                               torch.stack([step.logits for step in steps]).float(), rtol=0, atol=1e-5)


def test_sampling_is_seeded_and_top_k_1_is_greedy(saved):
    _, directory = saved
    loaded = AutoModelForCausalLM.from_pretrained(directory)
    prompt = torch.randint(0, 300, (1, 10), generator=torch.Generator().manual_seed(4))
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(loaded.generate(prompt, max_new_tokens=16, do_sample=True, temperature=1.5, top_p=0.95,
                                    top_k=0, pad_token_id=0))
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (1, 26)
    greedy = loaded.generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert not torch.equal(runs[0], greedy)  # at temperature 1.5 an untrained model samples other tokens
    top1 = loaded.generate(prompt, max_new_tokens=16, do_sample=True, top_k=1, pad_token_id=0)
    assert torch.equal(top1, greedy)


def test_what_the_wrapper_refuses():
    loaded = BreathForCausalLM.from_breath(tiny("phase2"))
    ids = torch.full((1, 4), 5)
    with pytest.raises(ValueError, match="attention_mask"):
        loaded(ids, attention_mask=torch.tensor([[0, 1, 1, 1]]))
    with pytest.raises(NotImplementedError, match="beam search"):
        loaded.generate(ids, max_new_tokens=2, num_beams=2, do_sample=False, pad_token_id=0)
    full = BreathForCausalLM.from_breath(tiny("phase2", resolvent="full"))
    assert full.config.use_cache is False
    with pytest.raises(ValueError, match="use_cache"):
        full(ids, use_cache=True)
    # Without a state, generate() re-reads the sequence for every token, as breath generate does.
    steps = list(generate(full.model, [1, 2, 3], 5, GREEDY))
    assert full.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=5, do_sample=False,
                         pad_token_id=0)[0, 3:].tolist() == [step.token for step in steps]


def test_import_breath_registers_lazily_and_needs_no_transformers():
    code = ("import sys, breath; assert 'transformers' not in sys.modules; "
            "from transformers import AutoConfig; print(type(AutoConfig.for_model('breath')).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "BreathConfig", result.stderr
    code = ("import sys; sys.modules['transformers'] = None; import breath\n"
            "try:\n    import breath.hf\nexcept ImportError as exc:\n    print(exc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "pip install 'breath[hf]'" in result.stdout, result.stderr



def test_an_older_transformers_is_refused_by_name_and_left_usable():
    # An older 5.x names the output's cache differently and would fail deep inside generate().
    code = ("import warnings, transformers; transformers.__version__ = '5.0.0'\n"
            "with warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always'); import breath\n"
            "print(caught[0].message)\n"
            "try:\n    import breath.hf\nexcept ImportError as exc:\n    print(exc)\n"
            "from transformers import AutoConfig")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 2, result.stderr
    assert lines[0].startswith("breath's models are not registered") and "found 5.0.0" in lines[0]
    assert "transformers>=5.25.0, found 5.0.0" in lines[1] and "pip install 'breath[hf]'" in lines[1]


# ----------------------------------------------------------------------- export and lm_eval (the run)


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory, breath_cli) -> Path:
    directory = tmp_path_factory.mktemp("export-hf")
    code, out, err = breath_cli("export", str(run_dir), "--format", "hf", "--output", str(directory))
    assert code == 0, err
    assert "lm_eval --model hf" in out
    return directory


def test_export_hf_loads_with_auto_classes(exported: Path, run_dir: Path):
    run = load_run(run_dir)
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "breath" and config["n_ctx"] == run.model.cfg.n_seq
    tokenizer = AutoTokenizer.from_pretrained(exported)
    text = "ROMEO:\nBut soft, what light through yonder window breaks? 𝄞"
    assert tokenizer(text).input_ids == run.tokenizer.encode(text).ids
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    assert tokenizer.eos_token == tokenizer.bos_token == EOT
    model = AutoModelForCausalLM.from_pretrained(exported)
    ids = torch.tensor([run.tokenizer.encode(text).ids])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, run.model(ids).logits.float(), rtol=0, atol=1e-5)


def test_export_hf_greedy_text_equals_breath_generate(exported: Path, run_dir: Path, breath_cli):
    code, out, err = breath_cli("generate", str(run_dir), "--prompt", "ROMEO:", "--temperature", "0",
                         "--max-new-tokens", "32", "--device", "cpu")
    assert code == 0, err
    tokenizer = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForCausalLM.from_pretrained(exported)
    ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=32, do_sample=False)  # stops at <|endoftext|> too
    assert out == "ROMEO:" + tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True) + "\n"


def test_lm_eval_task_text_tokenises_as_breath_eval_stream(exported: Path, run_dir: Path):
    """The task's one document, read by the HF tokenizer, is exactly breath eval's token stream."""
    run = load_run(run_dir)
    row = json.loads((exported / "lm_eval" / "breath_shakespeare_test.jsonl").read_text())
    documents = split_documents(load_corpus("shakespeare", run.train_options["cache_dir"]))["test"]
    stream = encode_documents(run.tokenizer, documents).tolist()
    assert AutoTokenizer.from_pretrained(exported)(row["text"]).input_ids == stream
    assert row["tokens"] == len(stream)


def test_task_names_come_from_the_dataset():
    assert task_name("shakespeare") == "breath_shakespeare"
    assert task_name("ptb") == "breath_ptb"  # a PTB run needs no other code
    assert task_name("data/My Corpus.v2.txt") == "breath_my_corpus_v2"


def lm_eval_windows_loss(model: torch.nn.Module, stream: list[int], prefix: int, n: int) -> float:
    """Mean token loss over lm_eval's loglikelihood_rolling windows (context_len 1, max_length n):
    ``prefix`` + the stream cut into windows of n predictions, the last one re-reading a full window."""
    tokens, total = [prefix, *stream], 0.0
    with torch.no_grad():
        for start in range(0, len(stream), n):
            end = min(start + n, len(stream))  # predict stream[start:end] = tokens[start+1:end+1]
            first = max(end - n, 0)
            logits = model(torch.tensor([tokens[first:end]])).logits[0].double().log_softmax(-1)
            targets = torch.tensor(tokens[first + 1:end + 1])
            total -= logits.gather(1, targets[:, None])[start - first:].sum().item()
    return total / len(stream)


@pytest.mark.slow
def test_lm_eval_perplexity_equals_breath_eval(exported: Path, run_dir: Path, tmp_path: Path, breath_cli):
    """The documented command: lm_eval's token_perplexity is breath eval's perplexity within 0.5%
    (the windows differ only at the ends), and equals breath's model on lm_eval's own windows."""
    code, _, err = breath_cli("eval", str(run_dir), "--split", "test", "--device", "cpu",
                       "--output", str(tmp_path / "eval.json"))
    assert code == 0, err
    breath_ppl = json.loads((tmp_path / "eval.json").read_text())["perplexity"]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    lm_eval = Path(sys.executable).with_name("lm_eval")
    result = subprocess.run(
        [str(lm_eval), "--model", "hf", "--model_args", f"pretrained={exported},trust_remote_code=True",
         "--include_path", str(exported / "lm_eval"), "--tasks", "breath_shakespeare", "--device", "cpu",
         "--batch_size", "16", "--output_path", str(tmp_path / "lm_eval")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = (tmp_path / "lm_eval").rglob("results_*.json")
    metrics = json.loads(results_file.read_text())["results"]["breath_shakespeare"]
    lm_eval_ppl = metrics["token_perplexity,none"]
    assert abs(lm_eval_ppl / breath_ppl - 1) < 0.005, (lm_eval_ppl, breath_ppl)

    run = load_run(run_dir)
    documents = split_documents(load_corpus("shakespeare", run.train_options["cache_dir"]))["test"]
    stream = encode_documents(run.tokenizer, documents).tolist()
    expected = math.exp(lm_eval_windows_loss(run.model, stream, run.tokenizer.token_to_id(EOT), run.model.cfg.n_seq))
    assert lm_eval_ppl == pytest.approx(expected, rel=1e-5)
    assert metrics["bits_per_byte,none"] > 0 and metrics["word_perplexity,none"] > lm_eval_ppl
