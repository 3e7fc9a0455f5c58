#!/usr/bin/env bash
# The accelerator table on one device machine (bench_population.py --accelerator), written to $OUT.
#
#   OUT=/path/to/out bash experiments/gpu_run.sh     # < 8 min on one GPU: a 360 s deadline inside, `timeout` outside
#
# The "before" of the same run: where .gpu-before/ holds ../shared/gpu-probe/probe.py beside src/ with the code the
# issue's H200 table measured (the commit before 9e99ed5), the probe's `pop --p 32 --m 1` row of that table runs
# after the benchmark, under 100 s, into $OUT/probe_before.json. Make it here, then name .gpu-before in `carry`:
#   rm -rf .gpu-before && mkdir -p .gpu-before/src && git archive 9e99ed5^ evonas experiments | tar -x -C .gpu-before/src
#   cp ../shared/gpu-probe/probe.py .gpu-before/
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
timeout -k 10 "${TIMEOUT:-380}" $PY experiments/bench_population.py --accelerator --deadline "${DEADLINE:-360}" \
  --out "$OUT/bench_accelerator.json" 2>&1 | grep -v "^WARNING" | tee "$OUT/bench_accelerator.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/bench_accelerator.log"
if [ -f .gpu-before/probe.py ]; then
  PYTHONPATH= timeout -k 5 "${PROBE_TIMEOUT:-100}" $PY .gpu-before/probe.py pop --set mid --p 32 --m 1 --calls 5 \
    > "$OUT/probe_before.log" 2>&1
  echo "probe exit $?" | tee -a "$OUT/probe_before.log"
  grep "^RESULT " "$OUT/probe_before.log" | sed 's/^RESULT //' > "$OUT/probe_before.json"
  grep -E "^(COMPILED|RESULT)" "$OUT/probe_before.log" | cut -c1-300
fi
