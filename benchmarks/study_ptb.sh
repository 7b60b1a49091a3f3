#!/usr/bin/env bash
# Issue 16 on one GPU: Penn Treebank at the base preset, every run trained until validation stops
# improving (patience 3, at most 20 epochs), B16 × 512, the same options for every arch; the test
# split evaluated in packed windows and in sliding ones (stride 64: each word with ≥ 448 words of
# context, as the published PTB results are measured).
#
#   1. The dropout, one value for every arch, chosen on validation: phase2 and the transformer at
#      seed 0 with dropout 0.1, 0.3 and 0.5; the value with the lowest summed best validation loss.
#   2. Every variant (benchmarks/study.py) × seeds 0, 1, 2 at that dropout (seed 0 of phase2 and the
#      transformer reused from step 1).
#
# Several runs share the GPU at once (`--jobs`): their train_s are not timings. Resumable: a run with
# a result.json is skipped, so the same command continues a cut session once the result files of the
# last one are back under benchmarks/results/study (checkpoints are deleted before they are sent).
#
#     bash benchmarks/study_ptb.sh SECONDS COMMIT     # on the device machine, from the repository root
set -u
budget=${1:?usage: study_ptb.sh SECONDS COMMIT}
export PYTHONPATH=src PYTHONUNBUFFERED=1 BREATH_GIT_COMMIT=${2:?usage: study_ptb.sh SECONDS COMMIT} BREATH_GIT_DIRTY=0
out=${OUT:-gpu-results}
root=${STUDY_ROOT:-benchmarks/results/study}  # where the runs go (a test's dry run sets it)
mkdir -p "$out" "$root"
started=$SECONDS
common=(--dataset ptb --until-converged --patience 3 --num-epochs 20 --preset base --batch-size 16 --n-seq 512
        --eval-stride 64)
left() { echo $((budget - (SECONDS - started))); }
study() {  # study DROPOUT LOG ARGS...: one study.py command, no new run after the budget less 4.5 minutes
    local dropout=$1 log=$2        # (a run takes < 3; 90 s stay for step 3)
    shift 2
    timeout "$(left)" python benchmarks/study.py "${common[@]}" --output-dir "$root/ptb-dropout$dropout" \
        --stop-after $(($(left) - 270)) --train-args "--cache-dir data-cache --dropout $dropout" "$@" >>"$out/$log" 2>&1
}

# 1. dropout on validation. The first command prepares the corpus and tokenizer cache (no lock): the
#    other two start once its first run is training.
study 0.1 d0.1.log --variants phase2,transformer --seeds 0 --jobs 2 &
until compgen -G "$root/ptb-dropout0.1/ptb/seed0/runs/ptb/*/metrics.jsonl" >/dev/null || [ "$(left)" -lt 200 ]; do
    sleep 5
done
study 0.3 d0.3.log --variants phase2,transformer --seeds 0 --jobs 2 &
study 0.5 d0.5.log --variants phase2,transformer --seeds 0 --jobs 2 &
wait
chosen=$(python - "$root" <<'EOF'
import json, sys
from pathlib import Path
best = {}
for dropout in ("0.1", "0.3", "0.5"):
    rows = [json.loads(p.read_text()) for p in
            Path(sys.argv[1], f"ptb-dropout{dropout}/ptb/seed0/runs/ptb").glob("*/result.json")]
    losses = {r["variant"]: r["best_val_loss"] for r in rows if "error" not in r}
    print(f"dropout {dropout}: {losses}", file=sys.stderr)
    if set(losses) == {"phase2", "transformer"}:
        best[dropout] = sum(losses.values())
print(min(best, key=best.get) if best else "")
EOF
)
echo "step 1: $(cat "$out"/d0.*.log | grep -c 'best val') runs finished; dropout chosen on validation: ${chosen:-none}"
# 2. every variant at 3 seeds at the chosen dropout
if [ -n "$chosen" ] && [ "$(left)" -gt 240 ]; then
    study "$chosen" main.log --seeds 0,1,2 --jobs 6
fi
grep -h "best val\|Error\|error" "$out"/*.log | tail -40
# 3. what each consolidation mechanism does inside the phase2 models trained in this command (their
#    checkpoints are deleted below): each switched off at evaluation time; one JSON per seed, which
#    `consolidation_at_eval.py --report` merges
for run in "$root"/ptb-dropout"${chosen:-none}"/ptb/seed*/runs/ptb/phase2; do
    seed=$(basename "$(dirname "$(dirname "$(dirname "$run")")")")
    if [ -f "$run/best_model.pt" ] && [ ! -f "$root/consolidation_at_eval_ptb_$seed.json" ] && [ "$(left)" -gt 30 ]; then
        timeout "$(left)" python benchmarks/consolidation_at_eval.py "$run" --device cuda \
            --output "$root/consolidation_at_eval_ptb_$seed.json" >>"$out/consolidation_at_eval.log" 2>&1
    fi
done
find "$root" -name "*.pt" -delete
cp -r "$root" "$out/study"
