"""Inference: sampling, streaming generation, ``breath eval``, ``breath generate`` and ``breath export``.

The command-line tests use one real run: ``scripts/train_phase2.py`` at tiny settings on the
built-in shakespeare corpus, trained once per test session (shared by the xdist workers).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from tokenizers import Tokenizer, pre_tokenizers

from breath import ModelConfig, build_model, load_pretrained
from breath.data.corpora import load_corpus, split_documents
from breath.data.tokenizer import EOT, train_word_tokenizer
from breath.data.windows import encode_documents
from breath.generate import StreamDecoder, byte_level_alphabet, generate
from breath.models.pretrained import WEIGHTS_FILE, load_weights
from breath.runs import load_model, load_run
from breath.sampling import SamplingSettings, sample, top_k_mask, top_p_mask
from breath.train.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
INF = -math.inf


# ------------------------------------------------------------------------------------------ sampling


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.5, -1.0, 2.0, 9.0, 0.0]])
    assert torch.equal(top_k_mask(logits, 2), torch.tensor([[INF, 5.0, INF, 4.0, INF], [INF, INF, 2.0, 9.0, INF]]))
    assert torch.equal(top_k_mask(logits, 1), torch.tensor([[INF, 5.0, INF, INF, INF], [INF, INF, INF, 9.0, INF]]))
    assert torch.equal(top_k_mask(logits, 50), logits)  # k beyond the vocabulary keeps everything
    assert torch.equal(top_k_mask(torch.tensor([1.0, 3.0, 3.0, 0.0]), 1), torch.tensor([INF, 3.0, 3.0, INF]))


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # ranked: 0.5 (index 1), 0.3 (3), 0.15 (0), 0.05 (2)
    logits = probs.log()
    kept = {p: torch.isfinite(top_p_mask(logits, p)).nonzero().flatten().tolist() for p in (0.3, 0.7, 0.85, 0.99, 1.0)}
    assert kept == {0.3: [1], 0.7: [1, 3], 0.85: [0, 1, 3], 0.99: [0, 1, 2, 3], 1.0: [0, 1, 2, 3]}
    masked = top_p_mask(torch.stack([logits, logits.flip(0)]), 0.7)  # row by row
    assert torch.equal(torch.isfinite(masked), torch.tensor([[False, True, False, True], [True, False, True, False]]))
    assert torch.equal(masked[0, [1, 3]], logits[[1, 3]])  # kept logits are untouched


def test_greedy_is_argmax_and_top_k_1_is_greedy_at_any_temperature():
    logits = torch.randn(16, 300, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample(logits, SamplingSettings(temperature=0)), logits.argmax(-1))
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(sample(logits, SamplingSettings(temperature=2.0, top_k=1), generator), logits.argmax(-1))


def test_seed_fixes_the_draws():
    logits = torch.zeros(1, 1000)
    settings = SamplingSettings(temperature=1.0)

    def draws(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [int(sample(logits, settings, generator)) for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_draws_follow_the_renormalised_distribution():
    n, generator = 8000, torch.Generator().manual_seed(0)
    logits = torch.tensor([0.15, 0.5, 0.05, 0.3]).log().expand(n, 4)
    top2 = torch.bincount(sample(logits, SamplingSettings(top_k=2), generator), minlength=4) / n
    assert top2[[0, 2]].sum() == 0 and top2[1].item() == pytest.approx(0.5 / 0.8, abs=0.02)
    nucleus = torch.bincount(sample(logits, SamplingSettings(top_p=0.85), generator), minlength=4) / n
    assert nucleus[2] == 0 and nucleus[0].item() == pytest.approx(0.15 / 0.95, abs=0.02)
    # Temperature 0.5 squares the odds: [1, 2] -> [1, 4].
    cooled = sample(torch.tensor([0.0, math.log(2)]).expand(n, 2), SamplingSettings(temperature=0.5), generator)
    assert cooled.float().mean().item() == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize("settings, field", [
    (SamplingSettings(temperature=-1.0), "temperature"), (SamplingSettings(temperature=math.nan), "temperature"),
    (SamplingSettings(top_k=0), "top_k"), (SamplingSettings(top_p=0.0), "top_p"),
    (SamplingSettings(top_p=1.5), "top_p"), (SamplingSettings(top_p=math.nan), "top_p"),
])
def test_bad_sampling_settings_name_the_field(settings, field):
    with pytest.raises(ValueError, match=f"^{field}: got"):
        settings.validate()


# ---------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("arch, resolvent", [("phase2", "causal"), ("phase1", "causal"), ("transformer", "causal"),
                                             ("phase2", "full")])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@torch.no_grad()
def test_generating_with_state_equals_rerunning_the_sequence(arch, resolvent, temperature, tiny_model):
    model = tiny_model(arch, resolvent=resolvent).double().eval()  # float64: several memory chunks in 40 tokens
    prompt = torch.randint(0, 97, (11,), generator=torch.Generator().manual_seed(2)).tolist()
    settings = SamplingSettings(temperature=temperature)
    steps = list(generate(model, prompt, 25, settings, torch.Generator().manual_seed(3), prefill_chunk=4))
    tokens = [step.token for step in steps]
    assert len(tokens) == 25
    # Each step against a stateless forward of the whole sequence so far (for the full resolvent
    # that is the only way; for the causal models one forward would do, but this is the definition).
    rerun = torch.stack([model(torch.tensor([prompt + tokens[:i]])).logits[0, -1] for i in range(25)])
    stepped = torch.stack([step.logits for step in steps])
    assert ((stepped - rerun).norm() / rerun.norm()).item() < 1e-9
    if temperature == 0:
        assert tokens == rerun.argmax(-1).tolist()


def test_generation_stops_at_the_stop_token(tiny_model):
    model = tiny_model("phase1").double().eval()
    first = next(generate(model, [5, 6, 7], 1, SamplingSettings(temperature=0))).token
    steps = list(generate(model, [5, 6, 7], 10, SamplingSettings(temperature=0), stop_token=first))
    assert [step.token for step in steps] == [first]


@pytest.mark.parametrize("arch, grows", [("phase2", False), ("phase1", False), ("transformer", True)])
def test_recurrent_state_has_one_size_while_the_kv_cache_holds_the_whole_generation(arch, grows, tiny_model):
    """Within a generation every state has one size (the KV cache is preallocated); across
    generations the recurrent state keeps it, the cache is proportional to prompt + new tokens."""
    model = tiny_model(arch).double().eval()
    short, long = ([step.state.nbytes() for step in generate(model, [1, 2, 3], n, SamplingSettings(0.0))]
                   for n in (10, 30))
    assert len(set(short)) == len(set(long)) == 1
    assert long[0] * (3 + 10) == short[0] * (3 + 30) if grows else long[0] == short[0]


def test_stream_decoder_emits_whole_characters(run_dir):
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    text = "ROMEO: 'Tis café, naïve — 日本語 🙂, Ωmega!"
    ids = tokenizer.encode(text).ids
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(token) for token in ids]
    assert "".join(pieces) + decoder.flush() == text
    assert "" in pieces  # a character spread over tokens waited for its last byte...
    assert not any("\ufffd" in piece for piece in pieces)  # ...and never came out broken
    assert decoder.push(tokenizer.token_to_id(EOT)) == ""
    assert set(byte_level_alphabet()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(byte_level_alphabet().values()) == list(range(256))


def test_stream_decoder_joins_words_with_spaces():
    tokenizer = train_word_tokenizer(["the cat sat\nthe dog ran\n"], vocab_size=8)
    ids = tokenizer.encode("the cat\n\nsat ran the\nzebra").ids
    decoder = StreamDecoder(tokenizer)
    assert "".join(decoder.push(token) for token in ids) + decoder.flush() == tokenizer.decode(ids)
    assert tokenizer.decode(ids) == "the cat\n\nsat ran the\n<unk>"
    decoder = StreamDecoder(tokenizer, after_space=False)  # after a prompt that ends in a word
    assert [decoder.push(token) for token in tokenizer.encode("dog\nsat").ids] == [" dog", "\n", "sat"]


def test_a_run_trained_with_the_kernels_required_evaluates_anywhere(run_dir, tmp_path, breath_cli):
    """use_triton='on' (kernels required, as on the GPU it was trained on) is a choice of that device:
    inference opens the run with 'auto', so it runs on the CPU too; 'off' is kept as saved."""
    checkpoint = torch.load(run_dir / "best_model.pt", weights_only=True)
    checkpoint["config"]["model"]["use_triton"] = "on"
    moved = tmp_path / "run"
    moved.mkdir()
    torch.save(checkpoint, moved / "best_model.pt")
    (moved / "tokenizer.json").write_bytes((run_dir / "tokenizer.json").read_bytes())
    assert load_run(moved).model.cfg.use_triton == "auto"
    code, stdout, stderr = breath_cli("generate", str(moved), "--prompt", "ROMEO:", "--temperature", "0",
                                      "--max-new-tokens", "4", "--device", "cpu")
    assert code == 0, stderr
    checkpoint["config"]["model"]["use_triton"] = "off"
    torch.save(checkpoint, moved / "best_model.pt")
    assert load_run(moved).model.cfg.use_triton == "off"


def test_generate_streams_the_greedy_continuation(run_dir, breath_cli):
    code, stdout, stderr = breath_cli("generate", str(run_dir), "--prompt", "ROMEO:", "--temperature", "0",
                                      "--max-new-tokens", "12")
    assert code == 0, stderr
    model, _ = load_model(run_dir / "best_model.pt")
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    ids = tokenizer.encode("ROMEO:").ids
    new = []
    for _ in range(12):  # greedy by re-running the whole sequence: no state involved
        new.append(int(model.eval()(torch.tensor([ids + new])).logits[0, -1].argmax()))
        if new[-1] == tokenizer.token_to_id(EOT):
            break
    assert stdout == "ROMEO:" + tokenizer.decode(new) + "\n"
    assert f"[{len(new)} tokens in" in stderr and "KiB" in stderr


def test_generate_compiled_gives_the_same_greedy_text(run_dir, breath_cli):
    """--compile: the torch.compiled decoding step continues the prompt as the plain one does."""
    args = ["generate", str(run_dir), "--prompt", "ROMEO:", "--temperature", "0", "--max-new-tokens", "12"]
    plain, compiled = breath_cli(*args), breath_cli(*args, "--compile")
    assert plain[0] == compiled[0] == 0, compiled[2]
    assert compiled[1] == plain[1]
    assert "compiled eager steps, compilation included" in compiled[2]


def test_generate_compile_with_the_full_resolvent_says_nothing_was_compiled(run_dir, tmp_path, breath_cli):
    """The full resolvent has no decoding step: --compile is said to have nothing to compile, and
    the closing line does not claim compiled steps."""
    checkpoint = torch.load(run_dir / "best_model.pt", weights_only=True)
    checkpoint["config"]["model"]["resolvent"] = "full"
    (tmp_path / "full").mkdir()
    save_checkpoint(tmp_path / "full" / "best_model.pt", checkpoint)
    shutil.copy(run_dir / "tokenizer.json", tmp_path / "full")
    code, _, stderr = breath_cli("generate", str(tmp_path / "full"), "--prompt", "ROMEO:", "--temperature", "0",
                                 "--max-new-tokens", "3", "--compile")
    assert code == 0, stderr
    assert "--compile has nothing to compile" in stderr and "compiled" not in stderr.replace("--compile", "")


def test_generate_is_reproducible_by_seed(run_dir, breath_cli):
    args = ["generate", str(run_dir), "--prompt", "", "--max-new-tokens", "20", "--top-k", "100", "--top-p", "0.95"]
    first, again, other = (breath_cli(*args, "--seed", seed) for seed in ("1", "1", "2"))
    assert first[0] == again[0] == other[0] == 0
    assert first[1] == again[1] and first[1] != other[1]


# -------------------------------------------------------------------------------------------- eval


def test_eval_measures_the_split_with_the_runs_tokenizer(run_dir, breath_cache, tmp_path, breath_cli):
    output = tmp_path / "eval.json"
    code, stdout, stderr = breath_cli("eval", str(run_dir), "--num-batches", "3", "--batch-size", "4",
                                      "--cache-dir", str(breath_cache), "--output", str(output))
    assert code == 0, stderr
    result = json.loads(output.read_text())
    assert (result["split"], result["dataset"], result["windows"], result["n_seq"]) == ("test", "shakespeare", 12, 64)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-12)
    assert f"loss {result['loss']:.4f}" in stdout and f"perplexity {result['perplexity']:.2f}" in stdout
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The same number from scratch: the test documents, the run's tokenizer, 12 windows of 64 + 1.
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    documents = split_documents(load_corpus("shakespeare", breath_cache))["test"]
    split = encode_documents(tokenizer, documents)
    tokens = split[: 12 * 64 + 1].long()
    inputs = torch.stack([tokens[i * 64:(i + 1) * 64] for i in range(12)])
    labels = torch.stack([tokens[i * 64 + 1:(i + 1) * 64 + 1] for i in range(12)])
    model, _ = load_model(run_dir / "best_model.pt")
    with torch.no_grad():
        losses = F.cross_entropy(model.eval()(inputs).logits.transpose(1, 2), labels, reduction="none")
    assert result["loss"] == pytest.approx(losses.mean().item(), rel=1e-6)
    assert result["position_loss"] == pytest.approx(losses.mean(0).tolist(), rel=1e-6)
    # Per word: the split's words (plus one per line end, as PTB's <eos>), the split's BPE tokens.
    words = sum(len(doc.text.split()) + doc.text.count("\n") for doc in documents)
    assert (result["split_words"], result["split_tokens"]) == (words, len(split))
    assert result["word_perplexity"] == pytest.approx(math.exp(result["loss"] * len(split) / words), rel=1e-12)
    assert result["word_perplexity"] > result["perplexity"]  # more BPE tokens than words
    assert f"per-word perplexity {result['word_perplexity']:.2f}" in stdout


def test_eval_with_a_stride_scores_each_token_once_with_context(run_dir, breath_cache, tmp_path, breath_cli):
    def evaluate(*extra: str) -> dict:
        output = tmp_path / f"eval{len(list(tmp_path.glob('*.json')))}.json"
        code, stdout, stderr = breath_cli("eval", str(run_dir), "--num-batches", "3", "--batch-size", "4",
                                          "--cache-dir", str(breath_cache), "--output", str(output), *extra)
        assert code == 0, stderr
        return {**json.loads(output.read_text()), "stdout": stdout, "png": output.with_suffix(".png").exists()}

    packed, same = evaluate(), evaluate("--stride", "64")  # the run's window is 64: no overlap
    assert same["loss"] == pytest.approx(packed["loss"], rel=1e-6) and same["tokens"] == packed["tokens"] == 12 * 64
    strided = evaluate("--stride", "16")
    assert (strided["stride"], strided["windows"], strided["tokens"]) == (16, 12, 64 + 11 * 16)
    assert strided["position_loss"] is None and strided["position_bands"] is None and not strided["png"]
    assert "every 16 tokens, 240 tokens scored, each with >= 48 tokens of context" in strided["stdout"]
    assert "loss by position" not in strided["stdout"]
    # the same number from scratch: window k starts at 16k; the first scores all 64 labels, the rest their last 16
    documents = split_documents(load_corpus("shakespeare", breath_cache))["test"]
    tokens = encode_documents(Tokenizer.from_file(str(run_dir / "tokenizer.json")), documents).long()
    model, _ = load_model(run_dir / "best_model.pt")
    total = 0.0
    with torch.no_grad():
        for k in range(12):
            window = tokens[16 * k:16 * k + 65]
            losses = F.cross_entropy(model.eval()(window[None, :-1]).logits[0], window[1:], reduction="none")
            total += losses.sum().item() if k == 0 else losses[-16:].sum().item()
    assert strided["loss"] == pytest.approx(total / 240, rel=1e-6)
    assert strided["word_perplexity"] == pytest.approx(
        math.exp(strided["loss"] * strided["split_tokens"] / strided["split_words"]), rel=1e-12)

    code, _, stderr = breath_cli("eval", str(run_dir), "--stride", "65", "--cache-dir", str(breath_cache))
    assert code == 2 and "--stride: got 65; allowed: 1 to the window, --n-seq (64)" in stderr
    code, _, stderr = breath_cli("eval", str(run_dir), "--stride", "0", "--cache-dir", str(breath_cache))
    assert code == 2 and "--stride: got 0; allowed: an integer >= 1" in stderr


def test_eval_windows_may_exceed_the_training_window(run_dir, breath_cache, tmp_path, breath_cli):
    output = tmp_path / "long.json"
    code, stdout, stderr = breath_cli("eval", str(run_dir / "checkpoint_epoch1.pt"), "--split", "val",
                                      "--n-seq", "160", "--num-batches", "1", "--cache-dir", str(breath_cache),
                                      "--output", str(output))
    assert code == 0, stderr
    result = json.loads(output.read_text())
    assert (result["split"], result["n_seq"], result["train_n_seq"]) == ("val", 160, 64)
    assert len(result["position_loss"]) == 160 and [b["last"] for b in result["position_bands"]][-2:] == [127, 160]


def test_causal_evaluation_of_a_full_resolvent_checkpoint(run_dir, breath_cache, tmp_path, breath_cli):
    """The same weights under the full resolvent score differently; --resolvent causal gives back
    exactly the causal model's loss (what the benchmark uses to measure the ablation's leakage)."""
    checkpoint = torch.load(run_dir / "best_model.pt", weights_only=True)
    checkpoint["config"]["model"]["resolvent"] = "full"
    full_run = tmp_path / "full"
    full_run.mkdir()
    save_checkpoint(full_run / "best_model.pt", checkpoint)
    shutil.copy(run_dir / "tokenizer.json", full_run)

    def evaluate(path: Path, *extra: str) -> None:
        code, _, stderr = breath_cli("eval", str(path), "--num-batches", "2", "--cache-dir", str(breath_cache), *extra)
        assert code == 0, stderr

    evaluate(full_run)
    evaluate(full_run, "--resolvent", "causal")
    evaluate(run_dir, "--output", str(tmp_path / "reference.json"))
    full = json.loads((full_run / "eval_test.json").read_text())
    causal = json.loads((full_run / "eval_test_causal-resolvent.json").read_text())  # the name says what changed
    reference = json.loads((tmp_path / "reference.json").read_text())
    assert (causal["resolvent"], full["resolvent"]) == ("causal", "full")
    assert causal["loss"] == reference["loss"]
    assert full["loss"] != reference["loss"]
    code, stdout, stderr = breath_cli("generate", str(full_run), "--prompt", "ROMEO:", "--temperature", "0",
                                      "--max-new-tokens", "5")
    assert code == 0 and stdout.startswith("ROMEO:") and "re-reads the whole sequence" in stderr


# ------------------------------------------------------------------------------------------ export


def test_export_computes_exactly_the_checkpoints_function(run_dir, tmp_path, breath_cli):
    code, stdout, stderr = breath_cli("export", str(run_dir), "--format", "safetensors",
                                      "--output", str(tmp_path / "exp"))
    assert code == 0, stderr
    exported = tmp_path / "exp"
    assert {p.name for p in exported.iterdir()} == {"model.safetensors", "config.json", "tokenizer.json"}
    assert (exported / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    with safe_open(str(exported / WEIGHTS_FILE), framework="pt") as weights:
        names, metadata = set(weights.keys()), weights.metadata()
    assert "embed.weight" in names and "head.weight" not in names  # the tied head is stored once
    assert metadata["source"] == str(run_dir / "best_model.pt")

    original, _ = load_model(run_dir / "best_model.pt")
    original.eval()
    model = load_pretrained(exported)
    assert not model.training and model.head.weight is model.embed.weight
    assert set(model.state_dict()) == set(original.state_dict())
    ids = torch.randint(0, original.cfg.vocab_size, (2, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
        config = ModelConfig.from_dict(json.loads((exported / "config.json").read_text()))
        rebuilt = build_model(config, weights=exported / WEIGHTS_FILE).eval()
        assert torch.equal(rebuilt(ids).logits, original(ids).logits)


def test_loading_weights_into_another_model_names_the_tensor(run_dir, tmp_path, breath_cli):
    assert breath_cli("export", str(run_dir), "--output", str(tmp_path))[0] == 0
    cfg = ModelConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))
    for change, expected in ((dict(d_model=96), "'embed.weight' has shape (512, 64)"),
                             (dict(n_layers=1), "has 'blocks.1."),
                             (dict(arch="transformer"), "has no 'blocks.0.attn.qkv.weight'")):
        with pytest.raises(ValueError, match=f"^weights: .*{expected}".replace("(", r"\(").replace(")", r"\)")):
            build_model(ModelConfig(**{**cfg.to_dict(), **change}), weights=tmp_path / WEIGHTS_FILE)
    (tmp_path / "torn.safetensors").write_bytes((tmp_path / WEIGHTS_FILE).read_bytes()[:100])
    with pytest.raises(ValueError, match="^weights: cannot read"):
        load_weights(build_model(cfg), tmp_path / "torn.safetensors")


def test_export_defaults_to_a_directory_next_to_the_checkpoint(run_dir, breath_cli):
    code, stdout, stderr = breath_cli("export", str(run_dir / "checkpoint_epoch1.pt"))
    assert code == 0, stderr
    assert (run_dir / "export" / WEIGHTS_FILE).is_file() and "load_pretrained" in stdout


# -------------------------------------------------------------------------------------- bad inputs


def bad_files(tmp: Path, run_dir: Path) -> dict[str, Path]:
    blob = (run_dir / "best_model.pt").read_bytes()
    files = {name: tmp / name for name in ("empty", "a_file", "untokenized", "newer")}
    files.update({name: tmp / f"{name}.pt" for name in ("truncated", "garbage", "foreign")})
    files["truncated"].write_bytes(blob[: len(blob) // 2])
    files["garbage"].write_bytes(os.urandom(2000))
    save_checkpoint(files["foreign"], {"state_dict": {"w": torch.ones(2)}})
    files["empty"].mkdir()
    files["a_file"].write_text("not a directory")
    files["untokenized"].mkdir()  # a checkpoint without the run's tokenizer beside it
    shutil.copy(run_dir / "best_model.pt", files["untokenized"])
    checkpoint = torch.load(run_dir / "best_model.pt", weights_only=True)
    checkpoint["config"]["model"]["attention_sinks"] = 4  # a field this version does not know
    files["newer"].mkdir()
    save_checkpoint(files["newer"] / "best_model.pt", checkpoint)
    shutil.copy(run_dir / "tokenizer.json", files["newer"])
    return files


RUN = "RUN_DIR_OR_CHECKPOINT"
# (arguments, what the one-line message must contain: the option, then the bad value)
BAD_INPUTS = [
    (["eval", "{tmp}/missing"], RUN, "missing"),
    (["eval", "{empty}"], RUN, "is not a run directory"),
    (["eval", "{truncated}"], RUN, "truncated.pt' is truncated"),
    (["eval", "{garbage}"], RUN, "garbage.pt"),
    (["eval", "{foreign}"], RUN, "missing key 'epoch'"),
    (["eval", "{untokenized}"], RUN, "no tokenizer.json"),
    (["eval", "{newer}"], RUN, "attention_sinks"),
    (["eval", "{run}", "--split", "dev"], "--split", "'dev'"),
    (["eval", "{run}", "--batch-size", "0"], "--batch-size", "0"),
    (["eval", "{run}", "--num-batches", "-1"], "--num-batches", "-1"),
    (["eval", "{run}", "--n-seq", "0"], "--n-seq", "0"),
    (["eval", "{run}", "--n-seq", "10000000"], "--n-seq", "10000000"),
    (["eval", "{run}", "--device", "tpu"], "--device", "tpu"),
    (["eval", "{run}", "--device", f"cuda:{torch.cuda.device_count()}"], "--device", "cuda:"),  # one past the last
    (["eval", "{run}", "--dataset", "{tmp}/missing.txt"], "--dataset", "missing.txt"),
    (["eval", "{run}", "--resolvent", "sideways"], "--resolvent", "sideways"),
    (["eval", "{run}", "--output", "{a_file}/sub/eval.json"], "--output", "a_file/sub"),
    (["eval", "{run}", "--output", "{tmp}/eval.txt"], "--output", "eval.txt"),
    (["generate", "{tmp}/missing", "--prompt", "x"], RUN, "missing"),
    (["generate", "{truncated}", "--prompt", "x"], RUN, "truncated"),
    (["generate", "{run}", "--prompt", "x", "--top-p", "1.5"], "--top-p", "1.5"),
    (["generate", "{run}", "--prompt", "x", "--top-p", "0"], "--top-p", "0"),
    (["generate", "{run}", "--prompt", "x", "--top-k", "0"], "--top-k", "0"),
    (["generate", "{run}", "--prompt", "x", "--temperature", "-1"], "--temperature", "-1"),
    (["generate", "{run}", "--prompt", "x", "--temperature", "nan"], "--temperature", "nan"),
    (["generate", "{run}", "--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens", "0"),
    (["generate", "{run}", "--prompt", "x", "--max-new-tokens", "ten"], "--max-new-tokens", "ten"),
    (["generate", "{run}", "--prompt", "x", "--seed", "-1"], "--seed", "-1"),
    (["generate", "{run}", "--prompt", "x", "--device", "gpu"], "--device", "gpu"),
    (["generate", "{run}"], "--prompt", "required"),
    (["export", "{garbage}"], RUN, "garbage.pt"),
    (["export", "{empty}"], RUN, "empty"),
    (["export", "{run}", "--format", "onnx"], "--format", "onnx"),
    (["export", "{run}", "--output", "{a_file}"], "--output", "a_file"),
]


@pytest.mark.parametrize("args, option, value", BAD_INPUTS, ids=[" ".join(a) for a, _, _ in BAD_INPUTS])
def test_bad_input_is_one_line_naming_option_and_value(args, option, value, run_dir, breath_cache, tmp_path,
                                                       breath_cli):
    paths = {"tmp": tmp_path, "run": run_dir, **bad_files(tmp_path, run_dir)}
    args = [a.format(**paths) for a in args]
    if args[0] == "eval":
        args += ["--cache-dir", str(breath_cache)]
    code, stdout, stderr = breath_cli(*args)
    lines = [line for line in stderr.splitlines() if line and not line.startswith("[breath.data]")]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith(f"breath {args[0]}: error: "), stderr
    assert option in lines[0] and value in lines[0], lines[0]
    assert "Traceback" not in stderr and stdout == ""
