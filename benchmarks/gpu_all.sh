#!/usr/bin/env bash
# Every benchmark's GPU profile in one call, at most 9.8 minutes in all (fits a 10-minute command):
# the timeouts below sum to 590 s (480 s for run_all's benchmarks, 60 s for benchmarks.convergence,
# 50 s for a resumable slice of the second training study, train-edges --profile gpu).
#
#   bash benchmarks/gpu_all.sh         # on a machine with an NVIDIA GPU and a CUDA build of JAX
#
# Checks for a GPU first and exits cleanly (status 0, a message, nothing run) when there is none.
# Each benchmark runs through `python -m benchmarks.run_all --profile gpu --only NAME` under its
# own timeout; results go to benchmarks/results/gpu-<device>/ (JSON with the machine in it,
# tokens.png, README.md with the summary), never over the CPU results. Where $OUT is set (the
# device tool of this workplace), the files are also copied there. The Python used is $PYTHON,
# else .venv/bin/python if present, else python3; the package runs from this checkout
# (PYTHONPATH=.), so no install is needed where JAX, Equinox, diffrax and optax are present.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_all.sh: no NVIDIA GPU on this machine (nvidia-smi finds none); nothing was run."
    echo "The CPU benchmarks are 'make bench' (python -m benchmarks.run_all)."
    exit 0
fi
DEVICE=$("$PY" -c 'import jax; d = jax.devices()[0]; print(d.platform, d.device_kind)' 2>/dev/null)
case "$DEVICE" in
    gpu*|cuda*) ;;
    *)
        echo "gpu_all.sh: nvidia-smi sees a GPU but JAX in $PY reports '${DEVICE:-nothing}';"
        echo "install a CUDA build of JAX (pip install 'jax[cuda12]') or set PYTHON=...; nothing run."
        exit 0
        ;;
esac
SLUG=$(echo "${DEVICE#* }" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
export SDEFORMER_BENCH_RESULTS="benchmarks/results/gpu-$SLUG"
mkdir -p "$SDEFORMER_BENCH_RESULTS"
LOG="$SDEFORMER_BENCH_RESULTS/gpu_all.log"
echo "gpu_all.sh: $DEVICE; results in $SDEFORMER_BENCH_RESULTS" | tee "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"

# name and timeout (s), most important first; bench_tokens starts no new size after its own
# budget (190 s). Each benchmark writes its JSON when it ends (bench_tokens after every size).
for job in tokens:220 sde:50 laws:60 design:60 train:30 init:30 compare:30; do
    name=${job%%:*}
    limit=${job##*:}
    start=$(date +%s)
    timeout -k 10 "$limit" "$PY" -m benchmarks.run_all --profile gpu --only "$name" 2>&1 \
        | tee -a "$LOG"
    status=${PIPESTATUS[0]}
    echo "gpu_all.sh: $name exited with $status after $(($(date +%s) - start)) s" \
        "(124: stopped at its $limit s timeout)" | tee -a "$LOG"
done
# the convergence sweeps (their own script, not in run_all): no new unit after 50 s, resumes
start=$(date +%s)
timeout -k 10 60 "$PY" -m benchmarks.convergence --profile gpu 2>&1 | tail -n 20 | tee -a "$LOG"
echo "gpu_all.sh: convergence exited with ${PIPESTATUS[0]} after $(($(date +%s) - start)) s" \
    "(124: stopped at its 60 s timeout)" | tee -a "$LOG"
# a slice of the second training study (docs/training.md): SIGTERM at 50 s keeps the finished runs
# and the current run's checkpoint; rerunning this script (or the same command alone, with a
# longer timeout) resumes it
start=$(date +%s)
timeout -s TERM -k 10 50 "$PY" -m sdeformer.cli train-edges --profile gpu --no-progress \
    --out "$SDEFORMER_BENCH_RESULTS/train_edges" 2>&1 | tail -n 20 | tee -a "$LOG"
echo "gpu_all.sh: train-edges exited with ${PIPESTATUS[0]} after $(($(date +%s) - start)) s" \
    "(124: stopped at its 50 s timeout; resumes)" | tee -a "$LOG"
"$PY" -m benchmarks.run_all --summary-only >/dev/null 2>&1
echo "gpu_all.sh: summary in $SDEFORMER_BENCH_RESULTS/README.md" | tee -a "$LOG"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    # the device tool brings back at most 8 files: the main ones, and everything in one archive
    for f in tokens.json tokens.png README.md; do
        [ -f "$SDEFORMER_BENCH_RESULTS/$f" ] && cp "$SDEFORMER_BENCH_RESULTS/$f" "$OUT/"
    done
    tar czf "$OUT/gpu_results.tar.gz" "$SDEFORMER_BENCH_RESULTS"
fi
exit 0
