#!/usr/bin/env bash
# The GPU checks as ONE command (a device lease is minutes): the `gpu` tests, then the GPU benchmarks.
# Run from the repo root on the GPU machine:
#     bash benchmarks/gpu/run.sh            # results in $OUT (the device tool's) or reports/
# The machine lacks a few pure-Python packages of ours: `bash benchmarks/gpu/fetch_wheels.sh` here
# first puts their wheels in .whl/ (git-ignored through .git/info/exclude), and the device call
# carries `.whl`. Budget: tests ~2 min, benchmarks ~4 min (torch.compile warm-up included).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-reports}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
site=/tmp/blip-site
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:$site:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
rc=0
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$OUT/gpu_tests.log" || rc=1
timeout 420 python3 benchmarks/bench_gpu.py --compile --out "$OUT/benchmarks_gpu" 2>&1 | tee "$OUT/bench_gpu.log" || rc=1
exit $rc
