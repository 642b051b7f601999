#!/bin/bash
# One detached GPU job (~23 GPU-minutes on one H200): the default's supervised stages, then GRPO variants and AR
# warm-start variants at equal RL-minutes, every one scored on the same held-out positions. Run from the repo root:
#
#   TARGET=/root/m/smol.gguf DATA=/root/corpus/train.jsonl.gz EVAL_DATA=/root/corpus/heldout.jsonl.gz \
#     WORK=/root/abl_job EXPORT=/root/exp bash benchmarks/gpu_ablation.sh
#
# The export gets rl_ablation.json, rl_profile.json (one compiled GRPO step, phase by phase), the supervised stages'
# summaries and variants.tgz (each variant's results, log and config).
# On a machine that drops commands after 10 minutes, start it with `setsid nohup ... &` and poll the pid it writes to
# $WORK/job.pid. Then, here: `python benchmarks/rl_ablation.py --table rl_ablation.json` for the table.
# CONFIG, MINUTES, VARIANTS and AR_VARIANTS override the defaults below (a space-separated list each; AR_VARIANTS=""
# runs no AR variant); EVAL_EVERY=100 adds each variant's in-run held-out curve (rl.eval_n positions).
set -euo pipefail
: "${TARGET:?set TARGET to the target model (a .gguf, an HF dir, smollm2)}"
: "${WORK:?set WORK to an empty folder for the run}"
CONFIG=${CONFIG:-configs/smollm2-l20.yaml}
MINUTES=${MINUTES:-2.5}
VARIANTS=${VARIANTS:-"base frozen_dtype=bfloat16 reward=log_mse"}
AR_VARIANTS=${AR_VARIANTS-"epochs=4"}
EVAL_EVERY=${EVAL_EVERY:-0}
EXPORT=${EXPORT:-$WORK/export}
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$WORK" "$EXPORT"
echo $$ > "$WORK/job.pid"
t0=$(date +%s)
data_args=()
[ -n "${DATA:-}" ] && data_args+=(--data "$DATA")
[ -n "${EVAL_DATA:-}" ] && data_args+=(--eval-data "$EVAL_DATA")

python -m nlakit train av --config "$CONFIG" --target "$TARGET" --out "$WORK/run" "${data_args[@]}"
echo "SUPERVISED done at $(( $(date +%s) - t0 )) s"
cp "$WORK/run/ar_sft.done.json" "$WORK/run/av_sft.done.json" "$WORK/run/timings.json" "$EXPORT/"

variant_args=()
for v in $VARIANTS; do variant_args+=(--variant "$v"); done
for v in $AR_VARIANTS; do variant_args+=(--ar-variant "$v"); done
python benchmarks/rl_ablation.py --run "$WORK/run" --config "$CONFIG" --target "$TARGET" --minutes "$MINUTES" \
  --out "$WORK/abl" "${variant_args[@]}" --eval-every "$EVAL_EVERY" --export "$EXPORT"
echo "ABLATION done at $(( $(date +%s) - t0 )) s"
(cd "$WORK/abl" && tar czf "$EXPORT/variants.tgz" \
  ./*/results.json ./*/log.jsonl ./*/config.yaml)
echo DONE
