#!/usr/bin/env bash
# The accelerator table on one device machine (bench_population.py --accelerator), written to $OUT.
#
#   OUT=/path/to/out bash experiments/gpu_run.sh     # < 8 min on one H200: a 450 s deadline inside, `timeout` outside
#
# The device image has jax (with CUDA), flax, optax, orbax-checkpoint, tqdm and torch, but not evosax or
# tensorflow-datasets, so evonas runs from this source tree (PYTHONPATH), not from an installed package; the
# built-in ListOps task needs neither (checked below and recorded in environment.txt).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/experiments${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
PY=${PYTHON:-python3}
{
  nvidia-smi -L 2>/dev/null
  $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  $PY -c "import sys, evonas.search; print('evonas imports; tensorflow_datasets loaded:', 'tensorflow_datasets' in sys.modules, '; evosax loaded:', 'evosax' in sys.modules)"
} 2>&1 | tee "$OUT/environment.txt"
timeout -k 10 "${TIMEOUT:-470}" $PY experiments/bench_population.py --accelerator --deadline "${DEADLINE:-450}" \
  --out "$OUT/bench_accelerator.json" 2>&1 | grep -v "^WARNING" | tee "$OUT/bench_accelerator.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/bench_accelerator.log"
