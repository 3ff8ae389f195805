#!/usr/bin/env bash
# One call on a lent GPU machine: versions, the whole suite on CUDA, the self-test and the
# benchmarks, each under its own time limit so that a slow part cannot eat the others' time.
# Usage (device tool, repository root): bash bench/gpu_sweep.sh PART...
#   PART: info tests selftest bench pybench targets (targets: the eager 4.7 step at the batch
#   sizes 32, 1024 and 8192, five blocks each, and the per-op overhead)
# Everything lands under $OUT (at most 8 files come back).
set -u
export PYTHONPATH=$PWD GPUGRAD_DEVICE=cuda PYTHONUNBUFFERED=1
out=${OUT:?run this through the device tool}
for part in "$@"; do
  case $part in
    info) { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
            python3 -c 'import sys,numpy,cupy,torch;print(sys.version);print("numpy",numpy.__version__,"cupy",cupy.__version__,"torch",torch.__version__)'
            python3 -m gpugrad.app.cli info --compile; } > "$out/info.txt" 2>&1 ;;
    tests) timeout "${TESTS_LIMIT:-420}" python3 -m pytest -q -rfE -p no:cacheprovider --timeout 120 tests \
             > "$out/tests.txt" 2>&1; echo "pytest rc=$?" >> "$out/tests.txt" ;;
    selftest) timeout "${SELFTEST_LIMIT:-400}" python3 -m gpugrad.app.cli selftest --device cuda --json "$out/selftest-cuda.json" \
             > "$out/selftest.txt" 2>&1; echo "selftest rc=$?" >> "$out/selftest.txt" ;;
    bench) timeout "${BENCH_LIMIT:-420}" python3 -m gpugrad.app.cli bench all --device cuda --full \
             --json "$out/bench-cuda.json" > "$out/bench.txt" 2>&1; echo "bench rc=$?" >> "$out/bench.txt" ;;
    targets) { timeout "${TARGETS_LIMIT:-360}" python3 -m gpugrad.app.cli bench mlp --device cuda --full \
               --batch 32,1024,8192 --json "$out/mlp-targets.json"; echo "bench mlp rc=$?"
               timeout 120 python3 -m gpugrad.app.cli bench overhead --device cuda --full \
               --json "$out/overhead.json"; echo "bench overhead rc=$?"; } > "$out/targets.txt" 2>&1 ;;
    pybench) timeout 300 python3 -m pytest bench/ -p no:cacheprovider --benchmark-only \
             --benchmark-json="$out/pytest-bench-cuda.json" > "$out/pytest-bench.txt" 2>&1 ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
  tail -n 3 "$out"/*.txt 2>/dev/null | tail -n 20
done
