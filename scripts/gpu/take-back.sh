#!/usr/bin/env bash
# After a device call of scripts/gpu/run-on-gpu.sh, here on the CPU machine, in the repository root:
#
#   bash scripts/gpu/take-back.sh FILES_AT      # FILES_AT: the folder the call's $OUT files were copied to
#
# keeps what came back under runs/gpu-back/<UTC time>/ (kit.log, bench.json, run/: the encoder to evaluate here)
# and puts the run's state (state.json, state.part*, metrics.jsonl) into .gpu-run/, which the next call carries
# to resume. The encoder is not put there: the next call does not need it (the carried set must stay < 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:?usage: take-back.sh FILES_AT}
[ -f "$src/kit.log" ] || { echo "take-back: $src has no kit.log: not the files of a run-on-gpu.sh call" >&2; exit 2; }
keep=runs/gpu-back/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$keep" && cp -r "$src"/. "$keep"/ && chmod -R u+w "$keep"
echo "kept in $keep: $(cd "$keep" && find . -type f | sort | tr '\n' ' ')"
if [ -f "$src/run/state.json" ]; then
  rm -rf .gpu-run.new && mkdir .gpu-run.new
  cp "$src"/run/state.json "$src"/run/state.part* "$src"/run/metrics.jsonl .gpu-run.new/ && chmod u+w .gpu-run.new/*
  rm -rf .gpu-run && mv .gpu-run.new .gpu-run
  echo ".gpu-run/ now holds the state of epoch $(sed -n 's/.*"epoch": \([0-9]*\).*/\1/p' .gpu-run/state.json | head -1): carry it (with .whl .gpu-data) to resume"
fi
