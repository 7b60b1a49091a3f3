"""benchmarks/gpu_plan.sh, dry-run on the CPU: every command each call would run names a script
that exists and options that script accepts, so no GPU minute is lost to a typo."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import decode_attention, gpu_check_bk, gpu_check_memory, throughput

ROOT = Path(__file__).resolve().parents[1]
FAKES = {  # stand-ins on PATH: timeout runs its command, python only records its arguments (a line in
    # one write: study_ptb.sh runs two at once, and two writes each could interleave their lines)
    "timeout": '#!/bin/sh\necho "$1" >> "$LIMITS_LOG"\nshift\nexec "$@"\n',
    "python": '#!/bin/bash\nline=$(printf "%q " "$@")\necho "$line" >> "$PLAN_LOG"\n',
    "nvidia-smi": "#!/bin/sh\n",
}


def dry_run(call: str, tmp_path: Path, script: str = "gpu_plan.sh") -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "PLAN_LOG": str(tmp_path / "commands.txt"), "LIMITS_LOG": str(tmp_path / "limits.txt"),
           "STUDY_ROOT": str(tmp_path / "study")}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / script), call, "c0ffee"], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def accepts(script: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The script parses ``args`` and stops only at its check for a GPU (exit 2 is a parser error)."""
    with pytest.raises(SystemExit) as stop:
        if script == "throughput.py":
            throughput.main(args)
        else:
            monkeypatch.setattr(sys, "argv", [script, *args])
            {"gpu_check_bk.py": gpu_check_bk, "gpu_check_memory.py": gpu_check_memory,
             "decode_attention.py": decode_attention}[script].main()
    assert isinstance(stop.value.code, str) and "CUDA" in stop.value.code, (script, args, stop.value.code)


@pytest.mark.parametrize("call", ["1", "2", "3", "4"])
def test_every_command_of_a_call_parses(call, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the scripts would run on this GPU: the dry run checks their arguments without one")
    done = dry_run(call, tmp_path)
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line) for line in (tmp_path / "commands.txt").read_text().splitlines()]
    scripts = [c for c in commands if c[0].startswith("benchmarks/") and "--report" not in c]
    assert scripts
    for command in scripts:
        assert (ROOT / command[0]).is_file(), command[0]
        accepts(Path(command[0]).name, command[1:], monkeypatch)
    # each script once (no output written twice), and the call's time limits fit the device's 600 s a command
    outputs = [c[c.index(flag) + 1] for c in scripts for flag in ("--out", "--output") if flag in c]
    assert len(outputs) == len(set(outputs)), outputs
    assert sum(int(line) for line in (tmp_path / "limits.txt").read_text().split()) <= 570
    for command in commands:
        if command[:2] == ["-m", "pytest"]:
            assert all((ROOT / a).exists() for a in command if a.startswith("tests/"))


def test_an_unknown_call_is_refused(tmp_path):
    done = dry_run("5", tmp_path)
    assert done.returncode == 2 and "CALL: got 5; allowed: 1, 2, 3, 4" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_ptb_study_commands_parse(tmp_path):
    """study_ptb.sh's first step (the dropout on validation): three study.py commands that parse, the
    same options for every arch. With the fake python no run finishes, so no dropout is chosen and
    the second step is not started (said in its output)."""
    from benchmarks import study

    done = dry_run("150", tmp_path, "study_ptb.sh")
    assert done.returncode == 0, done.stderr
    assert "dropout chosen on validation: none" in done.stdout
    commands = [shlex.split(line) for line in (tmp_path / "commands.txt").read_text().splitlines()]
    runs = [c[1:] for c in commands if c[:1] == ["benchmarks/study.py"]]
    assert len(runs) == 3
    for args in runs:
        parsed = study.parse_args(args)
        assert parsed.dataset == "ptb" and parsed.until_converged and parsed.preset == "base"
    assert sorted(r[r.index("--train-args") + 1].split()[-1] for r in runs) == ["0.1", "0.3", "0.5"]
