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
# The cli part (issue 32) runs the commands a user types on a GPU machine end to end at tiny sizes:
# each search (bf16-mixed and fp32), trainer=ddp with the timm-safe SyncBatchNorm, task=eval,
# task=profile, task=quantize and resume=true, each checked by check_run.py (files, finite scores,
# the genotype of the CPU run). All three parts (~13 min on a GPU) do not fit one call: run
#   device: run(command="CHECKS_PARTS=cli bash benchmarks/gpu/checks.sh", carry=[".whl"], timeout_s=540)
# first, then CHECKS_PARTS="tests bench" in a second call if device time is left.
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

# which parts run, in this order: tests (CUDA tests), cli (the CLI end to end), bench (benchmark rows);
# the device's 15 minutes may not hold all three in one call: CHECKS_PARTS=cli, then CHECKS_PARTS="tests bench"
PARTS=" ${CHECKS_PARTS:-tests cli bench} "
part() { [[ $PARTS == *" $1 "* ]]; }

# The commands a user types, end to end at tiny sizes (issue 32): each step runs the CLI, then
# benchmarks/gpu/check_run.py asserts what the run left (files, finite scores, genotypes) and prints
# its JSON row. On the CPU (CHECKS_DEVICE=cpu) the same steps run with trainer=cpu, hardware=cpu.
cli_steps() {
    local R=$OUT/runs TR=(trainer=gpu) HW=(hardware=gpu) DDP=(trainer=ddp trainer.devices=1)
    if [ "$DEVICE" != cuda ]; then
        TR=(trainer=cpu) HW=(hardware=cpu)
        DDP=(trainer=ddp trainer.devices=1 trainer.accelerator=cpu trainer.precision=32-true trainer.benchmark=false
             trainer.sync_batchnorm=false)
    fi
    local TINY=(data=synthetic data.crop_size=32 data.train_size=16 data.val_size=8 data.batch_size=4
                trainer.max_epochs=1 trainer.enable_progress_bar=false trainer.log_every_n_steps=1 logger=csv
                hardware.runs=2 hardware.warmup=1 hardware.repeats=1 train.log_images=2 quantize.in_summary=false)
    local ADL=(searcher=autodeeplab searcher.layers=3 searcher.filter_multiplier=2 searcher.blocks=2 searcher.epochs=2
               searcher.warmup_epochs=1 searcher.val_images=4 searcher.batches_per_epoch=null
               searcher.network.filter_multiplier=2 searcher.network.aspp_channels=8 searcher.network.decoder_channels=8
               searcher.network.low_level_channels=4 retrain.epochs=1)
    local AUX=(searcher=auxcell searcher.children=3 searcher.stage1.num_crops=8 searcher.stage1.batch_size=4
               searcher.stage1.epochs=2 searcher.stage2.max_batches=1 searcher.reward.holdout_min=4
               searcher.controller.ppo.minibatch_size=2 "searcher.reward.omit_classes=[]")
    local FMAS=(searcher=fmas searcher.supernet_epochs=1 searcher.pop_size=4 searcher.generations=2 searcher.val_images=4
                searcher.calib_images=4 retrain.epochs=1)
    local TRAIN=(task=train arch=deeplabv3plus-mobilenetv2)
    local CLI=("$PY" -m segnas.run) CHECK=("$PY" benchmarks/gpu/check_run.py)
    local SCORES=(val_mIoU val_pixel_acc params macs latency_ms) RUN=(model.pt model.onnx genotype.yaml last.ckpt)
    mkdir -p "$R"
    # the main job, bf16-mixed on the GPU, with its winner quantized into the summary (int8 of a GPU-trained net)
    step cli_autodeeplab 150 "${CHECK[@]}" "$R/adl" --files "${RUN[@]}" search.csv \
        --finite "${SCORES[@]}" int8_miou int8_latency_ms \
        -- "${CLI[@]}" "${TINY[@]}" "${ADL[@]}" "${TR[@]}" quantize.in_summary=true run_dir="$R/adl"
    local REF=$R/adl  # on the CPU both runs are fp32 on the CPU: the plumbing of the comparison
    if [ "$DEVICE" = cuda ]; then  # the CPU run of the fp32 job, whose genotype the GPU's must match
        REF=$R/adl_cpu
        step cli_autodeeplab_cpu 150 "${CHECK[@]}" "$REF" --finite "${SCORES[@]}" \
            -- "${CLI[@]}" "${TINY[@]}" "${ADL[@]}" trainer=cpu hardware=cpu run_dir="$REF"
    fi
    step cli_autodeeplab_fp32 150 "${CHECK[@]}" "$R/adl_fp32" --files "${RUN[@]}" --finite "${SCORES[@]}" \
        --same-genotype-as "$REF" \
        -- "${CLI[@]}" "${TINY[@]}" "${ADL[@]}" "${TR[@]}" trainer.precision=32-true run_dir="$R/adl_fp32"
    step cli_auxcell 150 "${CHECK[@]}" "$R/auxcell" --files "${RUN[@]}" search.csv --finite "${SCORES[@]}" \
        -- "${CLI[@]}" "${TINY[@]}" "${AUX[@]}" "${TR[@]}" run_dir="$R/auxcell"
    step cli_fmas 150 "${CHECK[@]}" "$R/fmas" --files "${RUN[@]}" pareto.csv supernet/model.pt \
        --finite "${SCORES[@]}" hypervolume supernet_miou --equals latency_target "${HW[0]#hardware=}" \
        -- "${CLI[@]}" "${TINY[@]}" "${FMAS[@]}" "${TR[@]}" "${HW[@]}" run_dir="$R/fmas"
    # DDP (NCCL on the GPU, gloo here) with the timm-safe SyncBatchNorm; then the converted network's
    # eval output against the unconverted one on the trained weights
    step cli_train_ddp 150 "${CHECK[@]}" "$R/ddp" --files "${RUN[@]}" best.ckpt --finite "${SCORES[@]}" \
        --syncbn --device "$DEVICE" \
        -- "${CLI[@]}" "${TINY[@]}" "${TRAIN[@]}" "${DDP[@]}" run_dir="$R/ddp"
    step cli_eval 90 "${CHECK[@]}" "$R/eval" --finite val_mIoU --close-to "$R/ddp" val_mIoU 0.02 \
        -- "${CLI[@]}" "${TINY[@]}" "${TR[@]}" task=eval checkpoint="$R/ddp" run_dir="$R/eval"
    step cli_profile 90 "${CHECK[@]}" "$R/profile" --finite params macs latency_ms \
        --equals latency_target "${HW[0]#hardware=}" \
        -- "${CLI[@]}" "${TINY[@]}" "${HW[@]}" task=profile arch="$R/ddp/genotype.yaml" profile.input_size=[128,128] \
           run_dir="$R/profile"
    step cli_quantize 120 "${CHECK[@]}" "$R/quantize" --summary quantize.json --files model.onnx model.int8.onnx \
        --finite miou_float32 miou_int8 latency_ratio file_ratio \
        -- "${CLI[@]}" "${TINY[@]}" task=quantize checkpoint="$R/ddp" run_dir="$R/quantize"
    # a run stopped after one epoch, then resumed in place for a second
    step cli_train_stopped 90 "${CHECK[@]}" "$R/resume" --files last.ckpt --finite val_mIoU \
        -- "${CLI[@]}" "${TINY[@]}" "${TRAIN[@]}" "${TR[@]}" run_dir="$R/resume"
    step cli_resume 90 "${CHECK[@]}" "$R/resume" --files "${RUN[@]}" --finite "${SCORES[@]}" --equals steps 8 \
        --equals resumed_from "$R/resume/last.ckpt" \
        -- "${CLI[@]}" "${TINY[@]}" "${TRAIN[@]}" "${TR[@]}" trainer.max_epochs=2 resume=true run_dir="$R/resume"
}

if part tests && [ "$DEVICE" = cuda ]; then
    step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_mixed_precision.py \
        tests/test_hardware.py::test_gpu_latency \
        tests/test_auxcell_ddp.py::test_children_train_on_the_gpu_and_a_host_cache_gives_the_same_children
fi

part cli && cli_steps
part bench || exit 0

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
