#!/usr/bin/env bash
# The GPU throughput checks of docs/benchmarks.md, in one run on a node with one CUDA GPU
# and the package installed (random weights: throughput does not depend on them):
#   1. embed ViT-L-14: the embed stage in the Ray actor vs the bare bf16 forward pass (aim: >= 0.9)
#   2. embed ViT-B-32: likewise
#   3. decode: the device JPEG decoder (and the CPU decoder) on web-sized JPEGs
#   4. pipeline ViT-B-32 with decode.device=gpu: Ray job end to end (aim: >= 15,000 img/s on one GPU)
# Each step has its own time limit, so one slow step still leaves the others' figures. Every bench's
# last line (one JSON object) is appended to $RESULTS; the full output goes to stdout.
#
#   infra/gpu-bench.sh                    # on the GPU node (sized for about 6 minutes on one H100/H200)
#   DEVICE=cpu SCALE=0 LARGE=curation-tiny SMALL=curation-tiny infra/gpu-bench.sh
#                                         # the same commands, smallest sizes, on CPU (tests run this)
set -uo pipefail

DEVICE=${DEVICE:-cuda}
RESULTS=${RESULTS:-gpu-bench.jsonl}
SCALE=${SCALE:-1}  # 0: smallest sizes (a smoke run), 1: the sizes the figures are quoted at
STEP_TIMEOUT=${STEP_TIMEOUT:-240}
CURATE=${CURATE:-curate}
LARGE=${LARGE:-ViT-L-14}  # the architectures timed (the smoke test on CPU names smaller ones)
SMALL=${SMALL:-ViT-B-32}
PIPE_ROUNDS=${PIPE_ROUNDS:-1}  # bench pipeline's interleaved rounds: one on a node nothing else runs on

if [ "$SCALE" = 0 ]; then
  EMBED_N=16 EMBED_BATCH=8 DECODE_N=8 PIPE_N=24 PIPE_SHARD=12 PIPE_BATCH=8
else
  EMBED_N=16384 EMBED_BATCH=512 DECODE_N=2000 PIPE_N=40000 PIPE_SHARD=2000 PIPE_BATCH=1024
fi
if [ "$DEVICE" = cuda ]; then
  GPU_SETTINGS=(--set model.num_gpus=1 --set model.device=cuda)
  EMBED_DEVICE=(--device cuda --precision bf16)
else
  GPU_SETTINGS=(--set model.num_gpus=0 --set model.device=cpu)
  EMBED_DEVICE=(--device cpu --precision fp32 --threads 1)
fi

failed=0
step() {  # step NAME COMMAND...: run it under the time limit, keep its JSON line
  local name=$1
  shift
  echo "== $name: $*"
  local log
  log=$(mktemp)
  timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  if [ "$status" -eq 0 ] && tail -n 1 "$log" | grep -q '^{'; then
    tail -n 1 "$log" >>"$RESULTS"
  else
    echo "== $name failed (exit $status)" >&2
    echo "{\"bench\": \"$name\", \"failed\": true, \"exit\": $status}" >>"$RESULTS"
    failed=1
  fi
  rm -f "$log"
}

step "embed-$LARGE" "$CURATE" bench embed --arch "$LARGE" --pretrained none "${EMBED_DEVICE[@]}" \
  --n "$EMBED_N" --batch-size "$EMBED_BATCH"
step "embed-$SMALL" "$CURATE" bench embed --arch "$SMALL" --pretrained none "${EMBED_DEVICE[@]}" \
  --n "$((EMBED_N * 2))" --batch-size "$((EMBED_BATCH * 2))"
step decode "$CURATE" bench decode --n "$DECODE_N" --torch-device "$DEVICE"
step "pipeline-$SMALL-gpu-decode" "$CURATE" bench pipeline --n "$PIPE_N" --shard-size "$PIPE_SHARD" --rounds "$PIPE_ROUNDS" \
  --set model.arch="$SMALL" --set model.pretrained=null --set 'heads=[]' --set model.batch_size="$PIPE_BATCH" \
  --set decode.device=gpu "${GPU_SETTINGS[@]}"

echo "== results in $RESULTS"
exit "$failed"
