#!/usr/bin/env bash
# Model benchmarks of issue 5, for the one prepared GPU call (scripts/gpu_check.sh calls it as its
# model-benchmark step; it also runs alone). Also runs on a CPU box: a tiny smoke instead (see below).
#
#   1. `ssnbench bench models --suite suites/bench_gpu.yaml --batch-sizes 32 --device cuda`:
#      SSN-ResNet50 (no cross-attention; shared cross-attention at the last 3 stages with impl
#      triton and with impl sdpa) and dual-ResNet50, B=32 per modality, bf16, channels_last.
#   2. `pytest tests/benchmarks` with real timing (--benchmark-json).
#   3. The issue-5 floors judged from step 1's JSON, printed last.
#
# Writes exactly three files into $OUT (the device call returns at most 8 in all):
#   $OUT/models.log              step 1 console table + step 3 floors
#   $OUT/pytest_benchmarks.log   step 2 console table
#   $OUT/models.tar.gz           bench_models_*.{csv,json,md}, models.json, pytest_benchmarks.json, floors.txt
# Budget on an H200: ~1.5 min for step 1 (GMACs counted on the CPU with fvcore when installed,
# Triton autotune on first use), ~1 min for step 2; each step has its own time limit.
#
# Without CUDA (or with SMOKE=1) it runs a tiny CPU smoke so the script itself stays tested:
# ResNet-18 at 64 px, B=2, one timed step, and the pytest cases once with --benchmark-disable.
# Knobs (env): OUT, PY, MODELS_SUITE, MODELS_BATCH_SIZES, T_MODELS, T_PYBENCH (seconds), SMOKE=1,
#              MODELS_ON_CPU=1 (the real suite on CPU: slow, minutes per model), MODELS_ROUNDS (--rounds).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-/tmp/gpu_bench_models_out}"
mkdir -p "$OUT"
if [[ -z "${PY:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python; fi
fi
T_MODELS="${T_MODELS:-150}"
T_PYBENCH="${T_PYBENCH:-120}"
WORK=$(mktemp -d /tmp/ssn_bench_models.XXXXXX)
START=$SECONDS
GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

SUITE="${MODELS_SUITE:-suites/bench_gpu.yaml}"
BATCHES="${MODELS_BATCH_SIZES:-32}"
DEVICE=cuda
PYBENCH=(--benchmark-only --benchmark-warmup=on --benchmark-warmup-iterations=3 --benchmark-max-time=0.3
         --benchmark-min-rounds=5 --benchmark-columns=median,iqr,ops,rounds --benchmark-sort=name
         --benchmark-json "$WORK/pytest_benchmarks.json")
if [[ "$GPU" != 1 || "${SMOKE:-0}" == 1 ]]; then
    DEVICE=cpu
    if [[ "${MODELS_ON_CPU:-0}" != 1 ]]; then
        echo "gpu_bench_models: no CUDA device (or SMOKE=1): tiny CPU smoke, numbers are not the benchmark"
        SUITE="$WORK/bench_cpu_smoke.yaml"
        BATCHES=2
        cat >"$SUITE" <<'EOF'
name: bench_cpu_smoke
dataset: {kind: synthetic, image_size: 64}
profile: {warmup: 1, iters: 1}
reference: ssn-r50
model_defaults: {options: {backbone: resnet18}}
models:  # the names of suites/bench_gpu.yaml, so the floors code runs end to end
  - {name: ssn-r50, arch: ssn, options: {xattn: none}}
  - {name: ssn-r50-xattn-triton, arch: ssn, options: {xattn: shared, xattn_impl: triton, xattn_cuda_graph: false}}
  - {name: ssn-r50-xattn-sdpa, arch: ssn, options: {xattn: shared, xattn_impl: sdpa, xattn_cuda_graph: false}}
  - {name: ssn-r50-xattn-triton-graph, arch: ssn, options: {xattn: shared, xattn_impl: triton, xattn_cuda_graph: true}}
  - {name: ssn-r50-xattn-sdpa-graph, arch: ssn, options: {xattn: shared, xattn_impl: sdpa, xattn_cuda_graph: true}}
  - {name: dual-r50, arch: dual, options: {xattn: none}}
  - {name: dual-r50-xattn, arch: dual, options: {xattn: separate, xattn_impl: triton, xattn_cuda_graph: false}}
EOF
    fi
    PYBENCH=(--benchmark-disable)
fi

run_step() {  # run_step LIMIT LOGFILE CMD...: time-limited, logged, rc printed
    local limit=$1 log=$2
    shift 2
    echo "=== [$((SECONDS - START))s] $* (limit ${limit}s) -> $log"
    timeout --signal=INT --kill-after=15 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    echo "=== rc=$rc after $((SECONDS - START))s"
    return $rc
}

# ---- 1. bench models ------------------------------------------------------------------------------
: >"$OUT/models.log"
COLUMNS=160 run_step "$T_MODELS" "$OUT/models.log" \
    "$PY" -m ssnbench bench models --suite "$SUITE" --device "$DEVICE" --batch-sizes "$BATCHES" \
    --out "$WORK" --json "$WORK/models.json" --rounds "${MODELS_ROUNDS:-1}"
RC_MODELS=$?

# ---- 2. pytest-benchmark cases ------------------------------------------------------------------
RC_PYBENCH=0  # T_PYBENCH=0: skipped
if ((T_PYBENCH > 0)); then
    : >"$OUT/pytest_benchmarks.log"
    COLUMNS=160 run_step "$T_PYBENCH" "$OUT/pytest_benchmarks.log" \
        "$PY" -m pytest -q -p no:cacheprovider -p no:xdist -rs tests/benchmarks "${PYBENCH[@]}"
    RC_PYBENCH=$?
    tail -n 3 "$OUT/pytest_benchmarks.log"
fi

# ---- 3. floors (issue 5; same run, same card) ----------------------------------------------------
if [[ -f "$WORK/models.json" ]]; then
    "$PY" - "$WORK/models.json" <<'EOF' 2>&1 | tee "$WORK/floors.txt" | tee -a "$OUT/models.log"
import json, sys

data = json.load(open(sys.argv[1]))
env = data["environment"]
rows = {(r["model"], r["train_batch_size"]): r for r in data["rows"]}
print(f"floors on {env['device_name']} (torch {env['torch']}, triton {env['triton']}, "
      f"amp {data['rows'][0].get('amp')}, channels_last {data['rows'][0].get('channels_last')}):")
for b in sorted({k[1] for k in rows}):
    get = lambda name, col: (rows.get((name, b)) or {}).get(col)  # noqa: E731
    ssn, dual = get("ssn-r50", "train_samples_per_sec"), get("dual-r50", "train_samples_per_sec")
    mem = {n: get(n, "train_peak_memory_mb") for n in ("ssn-r50", "ssn-r50-xattn-triton", "dual-r50",
                                                        "dual-r50-xattn", "ssn-r50-xattn-triton-graph")}

    def line(text, ok):
        mark = "-" if ok is None else ("ok" if ok else "MISS")
        print(f"  B={b:<3} {text:<72} {mark}")

    have = lambda *v: all(x is not None for x in v)  # noqa: E731
    line(f"SSN train {ssn} img/s vs dual {dual}: x{ssn / dual:.2f} (>= 1.6)" if have(ssn, dual)
         else "SSN vs dual train img/s: missing", (ssn / dual >= 1.6) if have(ssn, dual) else None)
    for tag in ("", "-graph"):  # eager blocks, then blocks replayed as CUDA graphs
        trit, sdpa = (get(f"ssn-r50-xattn-{i}{tag}", "train_samples_per_sec") for i in ("triton", "sdpa"))
        blocks = "graphed blocks" if tag else "eager blocks"
        if tag and not have(trit, sdpa):
            continue
        line(f"{blocks}: xattn triton costs {1 - trit / ssn:.1%} of SSN train img/s (<= 15%)"
             if have(trit, ssn) else "xattn triton cost: missing",
             (1 - trit / ssn <= 0.15) if have(trit, ssn) else None)
        line(f"{blocks}: triton {trit} vs sdpa {sdpa} train img/s: x{trit / sdpa:.2f} (> 1)"
             if have(trit, sdpa) else "triton vs sdpa: missing", (trit > sdpa) if have(trit, sdpa) else None)
    for name, other in (("ssn-r50", "dual-r50"), ("ssn-r50-xattn-triton", "dual-r50"),
                        ("ssn-r50-xattn-triton", "dual-r50-xattn"),
                        ("ssn-r50-xattn-triton-graph", "dual-r50-xattn")):
        m, d = mem[name], mem[other]
        if m is None and name.endswith("-graph"):
            continue
        line(f"{name} peak train {m} MiB vs {other} {d} MiB (<=)" if have(m, d)
             else f"{name} vs {other} memory: missing", (m <= d) if have(m, d) else None)
for r in data["rows"]:
    if r.get("error"):
        print(f"  note {r['model']} B={r['train_batch_size']}: {r['error']}")
EOF
fi

tar -czf "$OUT/models.tar.gz" -C "$WORK" . 2>/dev/null
rm -rf "$WORK"
echo "gpu_bench_models: bench models rc=$RC_MODELS, pytest benchmarks rc=$RC_PYBENCH, $((SECONDS - START))s," \
     "device=$DEVICE; files: models.log pytest_benchmarks.log models.tar.gz in $OUT"
exit $(( RC_MODELS != 0 ? RC_MODELS : RC_PYBENCH ))
