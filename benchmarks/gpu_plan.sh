#!/usr/bin/env bash
# The GPU measurements owed to issues 14 and 15, in calls of under ten minutes each (one H100 or
# H200; each script saves after every row, so a cut call keeps what it measured). Calls 1 and 2 ran
# on 2026-12-07; calls 3 and 4 are what is owed now. On the device machine, from the repository root:
#
#     bash benchmarks/gpu_plan.sh CALL COMMIT     # CALL: 1 to 4; COMMIT: the sent tree's git commit
#
# Results go to $OUT (the device tool's folder; ./gpu-results elsewhere). The copy sent to the
# device has no .git: COMMIT is recorded in every JSON through BREATH_GIT_COMMIT (benchmarks/provenance.py).
set -u
call=${1:?usage: gpu_plan.sh CALL COMMIT}
case $call in 1|2|3|4) ;; *) echo "gpu_plan.sh: CALL: got $call; allowed: 1, 2, 3, 4" >&2; exit 2 ;; esac
export PYTHONPATH=src PYTHONUNBUFFERED=1 BREATH_GIT_COMMIT=${2:?usage: gpu_plan.sh CALL COMMIT} BREATH_GIT_DIRTY=0
out=${OUT:-gpu-results}
mkdir -p "$out"
run() {  # run NAME SECONDS ARGS...: one script under a time limit, its log in $out/NAME.log
    local name=$1 limit=$2
    shift 2
    timeout "$limit" python "$@" >"$out/$name.log" 2>&1
    echo "$name: exit $?"
}
case $call in
1)  # issue 14's training table (eager: every arch, the profile; compiled: gpt and phase2), then the BK scan
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv >"$out/gpu.txt"
    run train_eager 240 benchmarks/throughput.py --only train --modes eager --profile base:4:8192 \
        --output "$out/train_eager.json"
    run train_compiled 200 benchmarks/throughput.py --only train --modes compiled --archs gpt,phase2 \
        --settings base:4:8192 base:1:32768 base:32:1024 base:4:1024 --output "$out/train_compiled.json"
    python benchmarks/throughput.py --report "$out/train_eager.json" "$out/train_compiled.json" | tail -40
    run bk_scan 100 benchmarks/gpu_check_bk.py --scan --out "$out/bk_scan.json"
    tail -20 "$out/bk_scan.log" ;;
2)  # the memory kernels, issue 15's decode table, then every GPU test (parallel workers: not a timing)
    run memory 120 benchmarks/gpu_check_memory.py --quick --out "$out/memory.json"
    tail -25 "$out/memory.log"
    run decode 200 benchmarks/throughput.py --only decode --archs phase2,transformer \
        --contexts 1024,32768,131072 --decode-batches 1,64 --output "$out/decode.json"
    python benchmarks/throughput.py --report "$out/decode.json" | tail -30
    run pytest 220 -m pytest -q -n 4 -m gpu tests/gpu -p no:cacheprovider
    tail -30 "$out/pytest.log" ;;
3)  # what is owed since call 3 of 2026-12-07 (H100): the split-KV decode attention on a GPU (its tests, the
    # graph decoder's greedy = eager, its kernel against flash), the decode table with it, then the
    # training rows at T 1024, where the BK resolvent now runs sequentially (SCAN_MIN_T 2048), with the
    # whole step in CUDA graphs (cudagraphs) beside eager and compiled: B4 T1024 is host-bound
    run pytest_decode 140 -m pytest -q -s -m gpu tests/gpu/test_decode_attention_cuda.py tests/gpu/test_decode_graphs.py \
        -p no:cacheprovider
    tail -4 "$out/pytest_decode.log"
    run decode_attention 60 benchmarks/decode_attention.py --out "$out/decode_attention.json"
    tail -8 "$out/decode_attention.log"
    run decode 190 benchmarks/throughput.py --only decode --archs phase2,transformer \
        --contexts 1024,32768,131072 --decode-batches 1,64 --output "$out/decode.json"
    python benchmarks/throughput.py --report "$out/decode.json" | tail -9
    run train_t1024 110 benchmarks/throughput.py --only train --modes eager,cudagraphs,compiled --archs gpt,phase2 \
        --settings base:4:1024 base:32:1024 --output "$out/train_t1024.json"
    python benchmarks/throughput.py --report "$out/train_t1024.json" | tail -7 ;;
4)  # the memory without consolidation (--no-consolidation, 2026-12-08): the memory kernels' accuracy on the
    # GPU (both paths: the sequential kernels changed) and timings by rows of S a program, then the
    # long-context training rows against the GPT in one run, and where its step's time goes at B1 T32768
    run memory 150 benchmarks/gpu_check_memory.py --quick --out "$out/memory.json"
    tail -30 "$out/memory.log"
    run train_noconsolidation 300 benchmarks/throughput.py --only train --modes compiled \
        --archs gpt,phase2,phase2-noconsolidation --settings base:4:8192 base:1:32768 base:32:1024 \
        --output "$out/train_noconsolidation.json"
    python benchmarks/throughput.py --report "$out/train_noconsolidation.json" | tail -8
    run profile_noconsolidation 100 benchmarks/throughput.py --only train --modes eager \
        --archs phase2-noconsolidation --settings base:1:32768 --profile base:1:32768 \
        --profile-arch phase2-noconsolidation --output "$out/profile_noconsolidation.json"
    python benchmarks/throughput.py --report "$out/profile_noconsolidation.json" | tail -25 ;;
esac
