#!/usr/bin/env bash
# The GPU checks and GPU benchmark rows, as one prepared script for a lent device machine
# (the `device` tool; 15 minutes of device time per session, so this is sized to ~7 minutes):
#
#   here:   bash benchmarks/gpu/wheels.sh            # once: .whl/ (the packages the image lacks)
#   device: run(command="bash benchmarks/gpu/checks.sh", carry=[".whl"], timeout_s=540)
#
# It installs .whl/ into /tmp/site (no network there), then runs, each step under its own
# timeout and going on past a failure: the CUDA-only tests and the mixed-precision tests; and
# the benchmarks on the GPU, fp32 and bf16 autocast, each printing its unit's counted FLOPs,
# the GEMM rate and the utilisation (issue 14, items 1-4). Everything goes to $OUT: log.txt (all
# output), rows.jsonl (every benchmark's JSON lines, tagged with the step) and steps.tsv (step,
# exit status, seconds). Copy the rows into BENCHMARKS.md with the machine and the date.
#
# CHECKS_DEVICE=cpu CHECKS_QUICK=1 CHECKS_INSTALL=0 PYTHON=.venv/bin/python bash benchmarks/gpu/checks.sh
# runs the same plumbing here on tiny settings (no timings worth keeping): a check of the script,
# not of a GPU. (.whl/ holds Python 3.12 wheels: the device's Python, not necessarily this one.)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
DEVICE=${CHECKS_DEVICE:-cuda}
QUICK=${CHECKS_QUICK:-0}
PY=${PYTHON:-python3}
# the steps after this many seconds are skipped (recorded as rc "skipped"), so the whole script
# ends inside the device call's timeout even when every step runs to its own limit
BUDGET=${CHECKS_BUDGET_S:-480}
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
LOG=$OUT/log.txt ROWS=$OUT/rows.jsonl STEPS=$OUT/steps.tsv
: >"$ROWS"
printf 'step\trc\tseconds\n' >"$STEPS"

if [ "${CHECKS_INSTALL:-1}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >>"$LOG" 2>&1 || { echo "wheel install failed; see $LOG"; tail -20 "$LOG"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, keep JSON lines, record rc and seconds
    local name=$1 limit=$2; shift 2
    local start=$SECONDS rc
    if [ $((SECONDS + 20)) -gt "$BUDGET" ]; then
        printf '%s\tskipped\t0\n' "$name" >>"$STEPS"
        echo "=== $name: skipped (budget of $BUDGET s spent)" | tee -a "$LOG"
        return
    fi
    [ $((SECONDS + limit)) -gt "$BUDGET" ] && limit=$((BUDGET - SECONDS))
    echo "=== $name: $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | grep '^{' | while IFS= read -r line; do
        printf '{"step": "%s", "row": %s}\n' "$name" "$line" >>"$ROWS"
    done
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >>"$STEPS"
    echo "=== $name: rc $rc in $((SECONDS - start)) s" | tee -a "$LOG"
}

step environment 60 "$PY" -c "
import json, platform, torch, segnas, segnas.pipeline
cuda = torch.cuda.is_available()
print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'device': torch.cuda.get_device_name() if cuda else 'cpu',
                  'python': platform.python_version(), 'cores': __import__('os').cpu_count()}))"

if [ "$DEVICE" = cuda ]; then
    step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_mixed_precision.py \
        tests/test_hardware.py::test_gpu_latency \
        tests/test_auxcell_ddp.py::test_children_train_on_the_gpu_and_a_host_cache_gives_the_same_children
fi

if [ "$QUICK" = 1 ]; then
    SMALL=(--layers 4 --filter-multiplier 4 --blocks 2 --steps 1 --warmup 0)
    step class_predictions 60 "$PY" benchmarks/class_predictions.py --device "$DEVICE" --runs 3 --shape 2 5 32 32
    step supernet_64_fp32 120 "$PY" benchmarks/autodeeplab_supernet.py --device "$DEVICE" --size 32 "${SMALL[@]}"
    step auxcell_children 120 "$PY" benchmarks/auxcell_children.py --device "$DEVICE" --children 1 --steps 1
    step eval_protocol 120 "$PY" benchmarks/eval_protocol.py --device "$DEVICE" --size 64 128 --window 64 --stride 48 --runs 1
    step train_step 120 "$PY" benchmarks/train_step.py --device "$DEVICE" --size 64 --batch 2 --steps 1 --warmup 1
    exit 0
fi

step class_predictions 60 "$PY" benchmarks/class_predictions.py --device "$DEVICE"
for precision in fp32 bf16; do
    flag=(); [ "$precision" = bf16 ] && flag=(--bf16)
    step "supernet_64_$precision" 90 "$PY" benchmarks/autodeeplab_supernet.py --device "$DEVICE" --size 64 --steps 5 "${flag[@]}"
    step "supernet_321_$precision" 120 "$PY" benchmarks/autodeeplab_supernet.py --device "$DEVICE" --size 321 --classes 19 --steps 3 "${flag[@]}"
    step "train_step_$precision" 60 "$PY" benchmarks/train_step.py --device "$DEVICE" "${flag[@]}"
    step "eval_protocol_$precision" 60 "$PY" benchmarks/eval_protocol.py --device "$DEVICE" "${flag[@]}"
done
step supernet_321_recompute 120 "$PY" benchmarks/autodeeplab_supernet.py --device "$DEVICE" --size 321 --classes 19 --steps 3 --recompute
step auxcell_children 120 "$PY" benchmarks/auxcell_children.py --device "$DEVICE" --children 3
step fmas_candidates 120 "$PY" benchmarks/search_throughput.py --searcher fmas --repeats 1 --checkout .
step auxcell_search 120 "$PY" benchmarks/search_throughput.py --searcher auxcell --repeats 1 --checkout .
