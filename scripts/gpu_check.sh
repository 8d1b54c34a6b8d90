#!/usr/bin/env bash
# GPU readiness, on a machine with a CUDA device: neurons and QCFS on CUDA against the CPU,
# one epoch of mixed-precision training then an exact --resume, and simulation (tests/test_cuda.py).
# Without a CUDA device it stops with an error instead of letting the tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device; install a CUDA build of torch "
             "(make install TORCH_SPEC=...) on a machine with a GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
PY
exec "$PYTHON" -m pytest -q -rs tests/test_cuda.py "$@"
