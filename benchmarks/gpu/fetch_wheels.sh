#!/usr/bin/env bash
# Wheels of what the GPU machine lacks and the GPU checks import (pure Python, any platform) into
# .whl/, which the device call carries (see benchmarks/gpu/run.sh). Run here, in the repo root.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl \
    "webdataset==$(python3 -c 'import importlib.metadata as m; print(m.version("webdataset"))')" \
    "braceexpand==$(python3 -c 'import importlib.metadata as m; print(m.version("braceexpand"))')"
ls -la .whl
