#!/usr/bin/env bash
# Runs issue 16's GPU work ON a lent GPU machine, in the repository root (docs/PRETRAINING.md,
# "Running on a lent GPU"); scripts/gpu/prepare.sh made what it reads, here on the CPU.
#
#   bash scripts/gpu/run-on-gpu.sh [STEP...]     STEP: tests bench train index (default: all four, in this order)
#
# install  the wheels of .whl/ (and .whl-imagenet/ if carried) into /tmp/site (always, first)
# tests    the CUDA-only tests (pytest -m gpu)
# bench    benchmarks/train_throughput.py, (a)/(b)/(c) at 224 px, 256 photos x 2 views -> $OUT/bench.json
# train    pretrain with configs/pretrain-watches-lite0-v2-gpu.toml into runs/watches-lite0-v2-gpu: a fresh run,
#          or a resume of the run still on this machine (a warm one) or of the state carried in .gpu-run/;
#          stops, with a checkpoint, in time for the call's deadline -> $OUT/run/ (state parts, metrics, encoder)
# index    build-index --checkpoint RUN/encoder.safetensors on 32 packed photos, then a search
#
# Everything is logged to $OUT/kit.log. At most 8 files come back: kit.log, bench.json and run/ (state.json,
# state.part00..02, metrics.jsonl, encoder.safetensors).
# Environment: OUT (default .gpu-out), DEADLINE (seconds for the whole call, default 540), TRAIN_SECONDS (the
# training's own limit; default: what is left of DEADLINE less 90 s for packing and the index),
# GPU_KIT_TINY=1 (a CPU dry run: the tiny recipe at 32 px, 3 epochs, the CUDA-only steps skipped; the wheels,
# if not for this Python, are only checked to install for Python 3.12), PY (default python3).
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS; step=install
OUT=${OUT:-$PWD/.gpu-out}; mkdir -p "$OUT/run"; OUT=$(cd "$OUT" && pwd)
LOG=$OUT/kit.log
PY=${PY:-python3}
DEADLINE=${DEADLINE:-540}
RUN=runs/watches-lite0-v2-gpu
CATALOG=.gpu-data/watches
STEPS=${*:-tests bench train index}
export PYTHONUNBUFFERED=1
log() { echo "[kit $(date -u +%H:%M:%S) +$((SECONDS - T0))s] $*" | tee -a "$LOG"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$LOG"; local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || log "exit $rc (124: timed out) in step $step"; return "$rc"; }
if [ -n "${GPU_KIT_TINY:-}" ]; then
  DEV=cpu; export OMP_NUM_THREADS=1
  TRAIN=(--config configs/pretrain-cpu-tiny.toml --set model.init=imagenet --set train.epochs=3 --set train.batch_size=16)
  BENCH=(--device cpu --size 32 --batch 8 --steps 2 --warmup 1 --limit 16 --workers 1)
else
  DEV=cuda
  TRAIN=(--config configs/pretrain-watches-lite0-v2-gpu.toml)
  BENCH=()
fi
log "steps: $STEPS; device $DEV; deadline ${DEADLINE}s; $($PY -V 2>&1); $(nvidia-smi -L 2>/dev/null | head -1)"

# install: this Python gets the wheels; another Python (a CPU dry run) only checks that they install for 3.12.
wheels=$(ls .whl/*.whl .whl-imagenet/*.whl 2>/dev/null)
[ -n "$wheels" ] || { log "no wheels in .whl/: run scripts/gpu/prepare.sh and carry .whl"; exit 2; }
PIPI=(-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
if $PY -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  run $PY "${PIPI[@]}" --target /tmp/site $wheels || exit 2
  export PYTHONPATH=/tmp/site:$PWD
else
  log "$($PY -V 2>&1) is not 3.12: the wheels are only checked to install for CPython 3.12 (into a temporary folder);"
  log "the packages come from this Python's environment"
  check=$(mktemp -d)
  run $PY "${PIPI[@]}" --target "$check" --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform linux_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 $wheels || exit 2
  rm -rf "$check"
  export PYTHONPATH=$PWD
fi

for step in $STEPS; do
  case $step in
  tests)
    if [ "$DEV" = cuda ]; then timeout 60 $PY -c 'import torch; assert torch.cuda.is_available()' || { log "no CUDA"; exit 2; }; fi
    run timeout 240 $PY -m pytest -q -rA -p no:cacheprovider -m gpu tests/train/test_run.py tests/train/test_catalog_cache.py
    ;;
  bench)
    run timeout 240 $PY benchmarks/train_throughput.py --catalog "$CATALOG" --json "$OUT/bench.json" "${BENCH[@]}"
    ;;
  train)
    if [ -f "$RUN/checkpoint.pt" ]; then
      log "resuming the run still on this machine ($RUN)"; args=(--resume)
    elif [ -f .gpu-run/state.json ]; then
      log "resuming the run carried in .gpu-run/"
      mkdir -p "$RUN" && cp .gpu-run/metrics.jsonl "$RUN/" && run $PY scripts/gpu/run_state.py unpack .gpu-run "$RUN/checkpoint.pt" || exit 2
      args=(--resume)
    else
      log "a fresh run"; args=("${TRAIN[@]}")
    fi
    limit=${TRAIN_SECONDS:-$((DEADLINE - (SECONDS - T0) - 90))}
    [ -n "${TRAIN_SECONDS:-}" ] || [ "$limit" -gt 30 ] || { log "only ${limit}s left for training: skipped"; continue; }
    run timeout $((limit + 120)) $PY -m simclr_watches pretrain "$CATALOG" --out "$RUN" "${args[@]}" --time-limit "$limit" --device $DEV
    [ -f "$RUN/checkpoint.pt" ] || { log "no checkpoint to bring back"; exit 2; }
    run $PY scripts/gpu/run_state.py pack "$RUN/checkpoint.pt" "$OUT/run" && cp "$RUN/metrics.jsonl" "$RUN/encoder.safetensors" "$OUT/run/"
    tail -n 3 "$RUN/metrics.jsonl" | tee -a "$LOG"
    ;;
  index)
    few=$(mktemp -d); find "$CATALOG" -name '*.jpg' | sort | head -n 32 | while read -r f; do cp "$f" "$few/$(echo "${f#$CATALOG/}" | tr / _)"; done
    run timeout 240 $PY -m simclr_watches build-index "$few" --checkpoint "$RUN/encoder.safetensors" --out /tmp/kit-index --force --device $DEV \
      && run timeout 120 $PY -m simclr_watches search "$(ls "$few"/* | head -n 1)" --index /tmp/kit-index -k 3 --json --device $DEV
    ;;
  *) log "unknown step $step (tests bench train index)"; exit 2 ;;
  esac
done
log "done; back under \$OUT: $(cd "$OUT" && find . -type f | wc -l) files (at most 8, each at most 16 MiB):"
(cd "$OUT" && find . -type f -printf '%s %p\n' | sort -k2) | tee -a "$LOG"
