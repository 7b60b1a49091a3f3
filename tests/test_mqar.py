"""The MQAR benchmark's task generator (benchmarks/mqar.py)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location("mqar", Path(__file__).parents[1] / "benchmarks" / "mqar.py")
mqar = sys.modules["mqar"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mqar)


def test_every_query_asks_a_stored_key_and_its_label_is_that_keys_value():
    task = mqar.Task(pairs=8, seq_len=64, vocab_size=64)
    inputs, labels = mqar.make_batch(task, 16, torch.Generator().manual_seed(0))
    for row_in, row_lab in zip(inputs, labels):
        context = dict(zip(row_in[0:16:2].tolist(), row_in[1:16:2].tolist()))
        assert len(context) == 8 and len(set(context.values())) == 8
        assert all(k <= 31 < v for k, v in context.items())  # disjoint key / value ranges
        query_positions = (row_lab != mqar.IGNORE).nonzero().flatten().tolist()
        assert len(query_positions) == 8 and min(query_positions) >= 16
        assert sorted(row_in[query_positions].tolist()) == sorted(context)
        for p in query_positions:
            assert row_lab[p].item() == context[row_in[p].item()]


def test_bad_task_is_refused_with_the_field_name():
    with pytest.raises(ValueError, match="seq_len"):
        mqar.Task(pairs=16, seq_len=32).validate()
    with pytest.raises(ValueError, match="pairs"):
        mqar.Task(pairs=200, vocab_size=64).validate()
