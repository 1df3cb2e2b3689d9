#!/usr/bin/env bash
# The GPU benchmark set in one command: at most 8 minutes on one GPU (an H200 here).
#
#   bash benchmarks/gpu.sh       # writes benchmarks/results/*_gpu*.{json,md}; log on stdout
#
# What it runs, each step under its own time limit (a step that fails or runs out of time
# does not stop the others; every benchmark prints its rows as they are measured):
#   1. the devices JAX sees                                                   (30 s)
#   2. benchmarks.bench_laplacian --quick --tf32: fit_potential's step at 2^12  (90 s)
#   3. benchmarks.bench_laplacian --batches 14 16, forward and Hessian, TF32  (150 s)
#   4. benchmarks.bench_scores --quick: FFJORD at the TF reference size, CFM    (90 s)
#   5. benchmarks.bench_scaling --real: fit step at 2^14, 2^20 scores on GPU    (90 s)
#
# A machine without flowjax and paramax (the H200 image lacks them) gets them as wheels in
# .whl/ (ignored by git; carry it). Download them once where pip can reach PyPI:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     flowjax==19.1.2 paramax==0.0.5
# With the device tool: run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=540);
# with $OUT set, the results and the log are also packed into $OUT/gpu_results.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/deeppot-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/deeppot-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

start=$SECONDS
failed=0
step() {  # step LIMIT_S COMMAND...: run under a time limit, report, go on
  local limit=$1
  shift
  echo "=== [$((SECONDS - start)) s] $* (limit ${limit} s)"
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "=== exit $rc: $*"
    failed=$((failed + 1))
  fi
}

step 30 $PY -c "import jax, deeppot; print('jax', jax.__version__, jax.devices())"
step 90 $PY -m benchmarks.bench_laplacian --quick --tf32 --name laplacian_quick
step 150 $PY -m benchmarks.bench_laplacian --batches 14 16 --methods forward hessian \
  --repeats 10 --tf32
step 90 $PY -m benchmarks.bench_scores --quick --tag gpu
step 90 $PY -m benchmarks.bench_scaling --real --devices 1 --batch 16384 --steps 100 \
  --n-scores 1048576 --chunk 65536 --df-chunk 16384 --name scaling_gpu
echo "=== done in $((SECONDS - start)) s, $failed step(s) failed"
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
  tar czf "$OUT/gpu_results.tgz" benchmarks/results
fi
exit $((failed > 0))
