"""The MQAR benchmark (benchmarks/mqar.py): its task generator, its scoring, its training recipe."""

import math
import sys
from types import SimpleNamespace

import pytest
import torch

from benchmarks import mqar

TASK = mqar.Task(pairs=8, seq_len=64, vocab_size=64)


def batch(task=TASK, size=64, seed=0):
    return mqar.make_batch(task, size, torch.Generator().manual_seed(seed))


def test_every_key_is_queried_once_after_the_pairs_and_its_label_is_that_keys_value():
    inputs, labels = batch()
    n = TASK.pairs
    for row_in, row_lab in zip(inputs, labels):
        context = dict(zip(row_in[0 : 2 * n : 2].tolist(), row_in[1 : 2 * n : 2].tolist()))
        assert len(context) == n and len(set(context.values())) == n
        assert all(1 <= k <= 31 < v < 64 for k, v in context.items())  # disjoint key / value halves
        query_positions = (row_lab != mqar.IGNORE).nonzero().flatten().tolist()
        assert len(query_positions) == n and min(query_positions) >= 2 * n
        assert all((p - 2 * n) % 2 == 0 for p in query_positions)
        assert sorted(row_in[query_positions].tolist()) == sorted(context)
        for p in query_positions:
            assert row_lab[p].item() == context[row_in[p].item()]


def test_the_query_section_holds_only_the_query_keys_and_pads():
    # If the values followed their queries in the inputs, "the one value not shown yet" would answer
    # the last query of every sequence without any recall (the old layout's 1/8 + … + 1/1 = 34%
    # plateau at 8 pairs).
    inputs, labels = batch()
    queries = inputs[:, 2 * TASK.pairs :]
    is_query = labels[:, 2 * TASK.pairs :] != mqar.IGNORE
    assert (queries[~is_query] == mqar.PAD).all()
    assert (queries[is_query] <= (TASK.vocab_size - 1) // 2).all()  # keys only, never a value


def oracle_logits(inputs: torch.Tensor, vocab: int, shift: int = 0) -> torch.Tensor:
    """A perfect causal recall model: at position p it reads inputs[:p + 1] only, finds the earlier
    occurrence of inputs[p] and predicts the token that followed it. ``shift`` = 1 reads one token
    too far (what a label misaligned by one would reward)."""
    logits = torch.zeros(*inputs.shape, vocab)
    for b, row in enumerate(inputs.tolist()):
        for p in range(len(row) - shift):
            seen = row[: p + 1 + shift]
            earlier = [q for q in range(len(seen) - 1) if seen[q] == seen[-1]]
            if earlier and row[p] != mqar.PAD:
                logits[b, p, seen[earlier[0] + 1]] = 1.0
    return logits


class Oracle:
    """Stands in for a model in ``mqar.accuracy`` (logits from ``oracle_logits``)."""

    training = False

    def __init__(self, shift: int):
        self.shift = shift

    def __call__(self, inputs):
        return SimpleNamespace(logits=oracle_logits(inputs, TASK.vocab_size, self.shift))

    def eval(self):
        pass

    def train(self, mode=True):
        pass


def test_random_filler_replaces_only_the_pads_with_tokens_that_are_not_keys():
    assert mqar.Task().filler == "pad"  # the default: the layout above, random stream included
    random_task = mqar.Task(pairs=8, seq_len=64, vocab_size=64, filler="random")
    padded, labels = batch(size=200, seed=5)
    filled, filled_labels = batch(random_task, size=200, seed=5)
    assert torch.equal(labels, filled_labels)  # same pairs, queries, gaps and labels
    was_pad = padded == mqar.PAD
    assert torch.equal(filled[~was_pad], padded[~was_pad])  # pairs and queries untouched
    assert not was_pad[:, : 2 * TASK.pairs].any() and not was_pad[labels != mqar.IGNORE].any()
    filler = filled.masked_fill(~was_pad, -1)
    assert ((filler >= 0) & (filler < 64)).sum() == was_pad.sum()
    keys = padded[:, 0 : 2 * TASK.pairs : 2]
    assert not (filler[:, :, None] == keys[:, None, :]).any()  # never a second occurrence of a key
    assert (filler > (64 - 1) // 2).any() and ((filler > 0) & (filler <= (64 - 1) // 2)).any()  # keys' half too
    assert (filled[was_pad] != mqar.PAD).float().mean() > 0.9
    no_autocast = torch.autocast("cpu", enabled=False)
    assert mqar.accuracy(Oracle(shift=0), [(filled[:8], labels[:8])], no_autocast) == 1.0
    with pytest.raises(ValueError, match="filler"):
        mqar.Task(filler="noise").validate()


def test_labels_are_the_next_token_a_causal_reader_must_emit():
    inputs, labels = batch(size=16)
    no_autocast = torch.autocast("cpu", enabled=False)
    assert mqar.accuracy(Oracle(shift=0), [(inputs, labels)], no_autocast) == 1.0
    assert mqar.accuracy(Oracle(shift=1), [(inputs, labels)], no_autocast) == 0.0


def test_query_gaps_follow_a_decreasing_power_law():
    task = mqar.Task(pairs=4, seq_len=64, vocab_size=64)
    _, labels = batch(task, size=2000, seed=1)
    slots = (task.seq_len - 2 * task.pairs) // 2
    gaps = ((labels != mqar.IGNORE).nonzero()[:, 1] - 2 * task.pairs) // 2
    counts = torch.bincount(gaps, minlength=slots).float()
    assert counts.sum() == 2000 * task.pairs
    assert counts[0] > counts[slots // 2] > counts[-1] > 0  # near gaps favoured, far ones still drawn


def test_bad_task_is_refused_with_the_field_name():
    with pytest.raises(ValueError, match="seq_len"):
        mqar.Task(pairs=16, seq_len=32).validate()
    with pytest.raises(ValueError, match="pairs"):
        mqar.Task(pairs=200, vocab_size=64).validate()


def test_warmup_then_cosine_and_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 4))
    optimizer, schedule = mqar.make_optimizer(model, lr=1e-3, weight_decay=0.1, steps=100, warmup_fraction=0.1)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:9], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[55] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert rates[-1] < 1e-6


@pytest.mark.parametrize("arch", ["phase2", "transformer", "phase1"])
def test_a_short_training_run_returns_a_sane_result(arch):
    task = mqar.Task(pairs=2, seq_len=16, vocab_size=16)
    result = mqar.train_and_evaluate(arch, task, steps=4, batch=8, d_model=32, n_layers=1, lr=1e-3,
                                     device="cpu", eval_sequences=20, log_every=2)
    assert result["arch"] == arch and result["steps"] == 4 and result["pairs"] == 2
    assert 0.0 <= result["accuracy"] <= 1.0 and math.isfinite(result["final_loss"])
    assert [c["step"] for c in result["curve"]] == [2, 4]
    assert result["parameters"] > 0


def test_set_reads_model_fields_and_refuses_unknown_ones():
    assert mqar.parse_overrides(["memory_conv=4", "memory_key_shift=false", "arch=phase2"]) == {
        "memory_conv": 4, "memory_key_shift": False, "arch": "phase2"}
    with pytest.raises(SystemExit, match="--set: .*'width=4'"):
        mqar.parse_overrides(["width=4"])


def rows_are_valid_recall_sequences(inputs, labels, task, length):
    """Each row: ``task.pairs`` pairs, every key queried once after them (label = its value, only at
    query positions), PAD inputs and IGNORE labels from ``task.seq_len`` to ``length``."""
    n = task.pairs
    assert inputs.shape[1] == labels.shape[1] == length
    assert (inputs[:, task.seq_len :] == mqar.PAD).all() and (labels[:, task.seq_len :] == mqar.IGNORE).all()
    for row_in, row_lab in zip(inputs, labels):
        context = dict(zip(row_in[0 : 2 * n : 2].tolist(), row_in[1 : 2 * n : 2].tolist()))
        assert len(context) == n
        query_positions = (row_lab != mqar.IGNORE).nonzero().flatten().tolist()
        assert len(query_positions) == n and min(query_positions) >= 2 * n and max(query_positions) < task.seq_len
        assert all((p - 2 * n) % 2 == 0 for p in query_positions)
        assert [row_lab[p].item() for p in query_positions] == [context[row_in[p].item()] for p in query_positions]
        is_query = torch.zeros(length, dtype=torch.bool)
        is_query[query_positions] = True
        assert (row_in[2 * n :][~is_query[2 * n :]] == mqar.PAD).all()


def test_a_mixed_batch_splits_its_rows_evenly_and_pads_the_shorter_settings():
    task = mqar.Task(pairs=8, seq_len=64, vocab_size=64)
    mix = [(2, 16), (4, 32)]
    inputs, labels = mqar.make_mixed_batch(task, mix, 23, torch.Generator().manual_seed(0))
    assert inputs.shape == labels.shape == (23, 64) and inputs.dtype == labels.dtype == torch.long
    start = 0
    for rows, (pairs, length) in zip([8, 8, 7], [(8, 64), *mix]):  # 23 = 8 + 8 + 7, headline rows first
        part = mqar.Task(pairs=pairs, seq_len=length, vocab_size=64)
        rows_are_valid_recall_sequences(inputs[start : start + rows], labels[start : start + rows], part, 64)
        start += rows


def test_without_a_mix_the_batch_and_random_stream_are_unchanged():
    plain = mqar.make_batch(TASK, 16, generator := torch.Generator().manual_seed(3))
    after_plain = torch.rand(4, generator=generator)
    mixed = mqar.make_mixed_batch(TASK, [], 16, generator := torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(plain, mixed))
    assert torch.equal(after_plain, torch.rand(4, generator=generator))


@pytest.mark.parametrize("item, message", [
    ("4x64", "expected PAIRS:LEN"),
    ("0:64", "expected PAIRS:LEN"),
    ("4:128", "LEN <= seq_len 64"),
    ("8:16", r"4 \* PAIRS <= LEN"),
    ("16:64", "PAIRS <= 15, the distinct keys of vocab 32"),
])
def test_bad_mix_items_are_refused_naming_the_item_and_the_rule(item, message):
    task = mqar.Task(pairs=4, seq_len=64, vocab_size=32)
    assert mqar.parse_mix(["2:16", "4:64"], task) == [(2, 16), (4, 64)]
    with pytest.raises(SystemExit, match=f"^--mix: .*{message}") as refused:
        mqar.parse_mix(["2:16", item], task)
    assert repr(item) in str(refused.value)


def test_the_command_line_refuses_a_mix_longer_than_the_headline(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mqar.py", "--seq-len", "64", "--pairs", "8", "--mix", "4:128"])
    with pytest.raises(SystemExit, match="--mix: '4:128' breaks the rule LEN <= seq_len 64"):
        mqar.main()


def test_report_merges_earlier_runs_without_training(tmp_path, monkeypatch):
    tiny = dict(steps=2, batch=8, d_model=16, n_layers=1, lr=1e-3, device="cpu", eval_sequences=8, log_every=1)
    paths = []
    for name, task, mix in [("a", mqar.Task(pairs=2, seq_len=16, vocab_size=16), [(1, 8)]),
                            ("b", mqar.Task(pairs=4, seq_len=16, vocab_size=16), None)]:
        result = mqar.train_and_evaluate("transformer", task, mix=mix, **tiny)
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(mqar.json.dumps({"environment": {"device": name}, "command": f"run {name}",
                                              "results": [result]}))
    assert mqar.json.loads(paths[0].read_text())["results"][0]["mix"] == [[1, 8]]
    output = tmp_path / "merged.json"
    monkeypatch.setattr(sys, "argv", ["mqar.py", "--report", *map(str, paths), "--output", str(output)])
    monkeypatch.setattr(mqar, "train_and_evaluate", None)  # trains nothing
    mqar.main()
    merged = mqar.json.loads(output.read_text())
    assert merged["commands"] == ["run a", "run b"]
    assert merged["environments"] == [{"device": "a"}, {"device": "b"}]
    assert [(r["pairs"], r["mix"]) for r in merged["results"]] == [(2, [[1, 8]]), (4, [])]
    table = output.with_suffix(".md").read_text().splitlines()
    assert len(table) == 4 and "| transformer mix 1:8 | 2 | 16 |" in table[2] and "| transformer | 4 | 16 |" in table[3]
    pytest.importorskip("matplotlib")
    assert output.with_suffix(".png").exists() and (tmp_path / "merged_sweep.png").exists()


def test_a_sweep_trains_each_setting_on_the_mixed_items_that_fit_it(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(arch, task, *, mix, **_):
        seen[task.pairs, task.seq_len] = mix
        return {"arch": arch, "mix": [list(m) for m in mix], "pairs": task.pairs, "seq_len": task.seq_len,
                "vocab_size": task.vocab_size, "d_model": 8, "accuracy": 0.5, "final_loss": 1.0, "steps": 1,
                "train_seconds": 0.0, "curve": []}

    monkeypatch.setattr(mqar, "train_and_evaluate", fake_run)
    monkeypatch.setattr(mqar, "write_outputs", lambda results, output: "")
    monkeypatch.setattr(sys, "argv", ["mqar.py", "--archs", "transformer", "--sweep", "--device", "cpu",
                                      "--mix", "4:64", "8:256", "--output", str(tmp_path / "s.json")])
    mqar.main()
    assert seen[16, 256] == seen[4, 1024] == [(4, 64), (8, 256)]
    assert seen[4, 128] == [(4, 64)]
    assert "pairs 4 T 128: --mix item 8:256 skipped, it breaks LEN <= seq_len 128" in capsys.readouterr().out
