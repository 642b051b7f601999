#!/bin/bash
# The full pipeline on a lent GPU machine, as one detached job watched from short calls (each call ends after at
# most 10 minutes; the machine, and the job with it, goes back 30 s after a call). Run from the repo root there.
#
#   bash benchmarks/gpu_session.sh assemble            # the GGUF from its staged parts, the gguf wheel, the corpus
#   bash benchmarks/gpu_session.sh start [ARGS...]     # benchmarks/train_eval.py detached; ARGS go to it (--set ...)
#   bash benchmarks/gpu_session.sh ablate [ENV=...]    # benchmarks/gpu_ablation.sh detached instead (its VARIANTS,
#                                                      # MINUTES, EVAL_EVERY, ... as ENV=VALUE words); watch it too
#   bash benchmarks/gpu_session.sh watch [SECONDS]     # wait for the job (default 560 s), then put into $OUT its log
#                                                      # tail, its run as it stands (--export-only: log, done files,
#                                                      # the bundle of the last RL checkpoint) and, once it has
#                                                      # finished, its own export (results, bundle)
#
# Staging (parts of the GGUF as the device notes say, each call carrying one): parts land in /root/m/part.NN; the
# last part, .stage/g/SHA256, .stage/tr, .stage/ho and .whl come with the `assemble` call. Then, here:
#   python benchmarks/train_eval.py --render RESULTS.json       (BENCHMARKS §1, from the fetched run.tar.gz)
set -euo pipefail
ROOT_DIR=${ROOT_DIR:-/root}
JOB=$ROOT_DIR/job RUN=$ROOT_DIR/run EXP=$ROOT_DIR/exp GGUF=$ROOT_DIR/m/smol.gguf CORPUS=$ROOT_DIR/corpus
verb=${1:?usage: gpu_session.sh assemble|start|watch}
shift

case "$verb" in
assemble)
  pip install -q --no-deps --target "$ROOT_DIR/site" .whl/gguf-*.whl >/dev/null 2>&1
  last=$(ls .stage/g/p*/part.* | sort | tail -1)
  cat $(ls "$ROOT_DIR"/m/part.* | sort) "$last" > "$GGUF"
  echo "$(cat .stage/g/SHA256)  $GGUF" | sha256sum -c
  mkdir -p "$CORPUS" && cp .stage/tr/train.jsonl.gz .stage/ho/heldout.jsonl.gz "$CORPUS/"
  ;;
start)
  rm -rf "$JOB" && mkdir -p "$JOB" && cp -r benchmarks configs src "$JOB/"
  cd "$JOB"
  PYTHONUNBUFFERED=1 PYTHONPATH="src:$ROOT_DIR/site" setsid nohup python benchmarks/train_eval.py --target "$GGUF" \
    --out "$RUN" --data "$CORPUS/train.jsonl.gz" --eval-data "$CORPUS/heldout.jsonl.gz" --budget 1650 \
    --set bundle_target=smollm2 --export "$EXP" --export-bundle "$@" > "$ROOT_DIR/job.log" 2>&1 < /dev/null &
  echo $! > "$ROOT_DIR/job.pid"
  echo "started pid $(cat "$ROOT_DIR/job.pid")"
  ;;
ablate)
  rm -rf "$JOB" "$EXP" && mkdir -p "$JOB" && cp -r benchmarks configs src "$JOB/"
  cd "$JOB"
  env "$@" TARGET="$GGUF" DATA="$CORPUS/train.jsonl.gz" EVAL_DATA="$CORPUS/heldout.jsonl.gz" WORK="$ROOT_DIR/abl_job" \
    EXPORT="$EXP" PYTHONPATH="$ROOT_DIR/site" setsid nohup bash benchmarks/gpu_ablation.sh > "$ROOT_DIR/job.log" 2>&1 \
    < /dev/null &
  echo $! > "$ROOT_DIR/job.pid"
  echo "started pid $(cat "$ROOT_DIR/job.pid")"
  ;;
watch)
  seconds=${1:-560}
  pid=$(cat "$ROOT_DIR/job.pid")
  end=$(( $(date +%s) + seconds ))
  while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
  tail -c 2500 "$ROOT_DIR/job.log" | tr '\r' '\n' | grep -av 'Converting\|Loading weights' | tail -20
  out=${OUT:?watch needs OUT, the folder whose files come back}
  (cd "$JOB" && PYTHONPATH="src:$ROOT_DIR/site" python benchmarks/train_eval.py --export-only "$RUN" --export "$out" \
    --export-bundle) || echo "export-only failed (the run may not have started its stages yet)"
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the job has ended"
    cp "$EXP"/* "$out/" 2>/dev/null || echo "no final export: see the log tail above"
  fi
  tail -c 200000 "$ROOT_DIR/job.log" > "$out/job.log"
  ls -la "$out"
  ;;
*)
  echo "unknown verb $verb: use assemble, start or watch" >&2
  exit 2
  ;;
esac
