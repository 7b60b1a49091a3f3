"""benchmarks/consolidation_at_eval.py on the session's tiny phase2 run: each setting switches off what
it names and nothing else, a mechanism that never fired changes no loss, and --report merges files."""

from __future__ import annotations

import json
import math

from benchmarks import consolidation_at_eval as cae


def test_each_setting_switches_off_its_mechanism(run_dir, breath_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("BREATH_CACHE", str(breath_cache))
    output = tmp_path / "cae.json"
    cae.main([str(run_dir), "--num-batches", "2", "--output", str(output)])
    record = json.loads(output.read_text())
    assert record["git_commit"] and record["device"] == "cpu" and record["split"] == "val"
    (row,) = record["runs"]
    settings = row["settings"]
    assert list(settings) == list(cae.SETTINGS)
    trained = settings["as trained"]
    for name, overrides in cae.SETTINGS.items():
        # the model evaluated had exactly these consolidation settings: the run's, with the overrides
        assert settings[name]["config"] == {**trained["config"], **overrides}, name
        assert math.isfinite(settings[name]["loss"]) and settings[name]["windows"] == trained["windows"]
    fired = trained["firing"]
    assert all(0 <= fired[k] <= 1 for k in ("eta_boost_rate", "gamma_boost_rate", "lyapunov_step_rate", "energy_removed"))
    assert 0 <= fired["modes_removed"] <= row["config"]["head_dim"]
    # A mechanism that never acted on these windows cannot change their loss (bit for bit on the CPU).
    if fired["lyapunov_step_rate"] == 0:
        assert settings["no-lyapunov"]["loss"] == trained["loss"]
    if fired["gamma_boost_rate"] == 0:
        assert settings["no-gamma-boost"]["loss"] == trained["loss"]
    if fired["modes_removed"] > 0:  # the projection removed something: keeping every mode changes the loss
        assert settings["no-resonance"]["loss"] != trained["loss"]
    assert settings["no-resonance"]["firing"]["modes_removed"] == 0
    assert "| no-consolidation | 1 |" in output.with_suffix(".md").read_text()

    merged = tmp_path / "merged.json"
    cae.main(["--report", str(output), str(output), "--output", str(merged)])
    merged_record = json.loads(merged.read_text())
    assert len(merged_record["runs"]) == 2 and len(merged_record["merged"]) == 2
    assert "| no-consolidation | 2 |" in merged.with_suffix(".md").read_text()
