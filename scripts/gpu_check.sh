#!/usr/bin/env bash
# One prepared call on the lent GPU (see ../shared/GPU.md). Also runs on a CPU box: GPU parts skip.
#
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# Steps (each under its own time limit, a failing step does not stop the next):
#   0. versions + device name                                  -> $OUT/env.txt
#   1. carried wheels (.whl/: fvcore, iopath, ...) and `pip install -e .` when not importable
#   2. GPU-marked kernel tests (bf16/fp16/fp32 vs float64, torch.compile), fixed kernel configs
#                                                              -> $OUT/kernel_tests.log
#   3. scripts/profile_xattn.py: host cost per call (direct launch vs Triton's JIT vs SDPA), the
#      block per impl at SSN-R50's stage shapes, profiled SSN-R50 steps -> $OUT/profile_xattn.{log,json}
#   4. model benchmarks (issue 5): `ssnbench bench models` + `pytest tests/benchmarks`
#                                                              -> $OUT/models.log, $OUT/models.tar.gz,
#                                                                 $OUT/pytest_benchmarks.log
#   5. `ssnbench bench kernels --json`, autotuned, per-config autotune timings in the JSON
#      (BENCH_METHODS picks the rows)                          -> $OUT/bench_kernels.{log,json}
#   6. short summary table, printed last                       -> $OUT/summary.txt
# At most 8 files come back from $OUT: the logs are packed into $OUT/logs.tar.gz at the end.
# Knobs (env): OUT, PY, QUICK=1 (bench --quick), TOTAL (script budget, default 560 s; each step is
#              cut to what is left), T_TESTS / T_PROFILE / T_BENCH / T_MODELS / T_PYBENCH (per-step
#              seconds; T_PYBENCH=0 skips the pytest benchmarks), SKIP_TESTS=1, SKIP_PROFILE=1,
#              SKIP_BENCH=1, SKIP_MODELS=1, PROFILE_ARGS (extra profile_xattn.py options), BENCH_METHODS, BENCH_LENGTHS, BENCH_DIMS, MODELS_SUITE,
#              MODELS_BATCH_SIZES, MODELS_ON_CPU=1, MODELS_ROUNDS (bench models --rounds, e.g. 3),
#              TEST_FILES (the GPU-marked test files of step 2).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
if [[ -z "${PY:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python; fi
fi
TOTAL="${TOTAL:-560}"        # whole-script budget in seconds (the device call allows 600)
T_TESTS="${T_TESTS:-170}"
T_PROFILE="${T_PROFILE:-90}"
T_BENCH="${T_BENCH:-260}"
T_MODELS="${T_MODELS:-120}"
T_PYBENCH="${T_PYBENCH:-90}"
TEST_FILES="${TEST_FILES:-tests/test_kernels_gpu.py tests/test_block_graphs.py tests/test_kernels_bench.py tests/test_cross_attention.py}"
START=$SECONDS
declare -A STATUS

step() {  # step NAME LIMIT LOGFILE CMD...: run with a time limit, log everything, remember the rc
    local name=$1 limit=$2 log=$3
    shift 3
    local remain=$((TOTAL - (SECONDS - START) - 15))  # keep 15 s for the summary
    if ((remain < 20)); then
        echo "=== $name: skipped, script budget TOTAL=${TOTAL}s spent" | tee "$log"
        STATUS[$name]=skipped
        return
    fi
    ((limit > remain)) && limit=$remain
    echo "=== [$((SECONDS - START))s] $name (limit ${limit}s) -> $log"
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$log" 2>&1
    local rc=$?
    STATUS[$name]=$rc
    tail -n 5 "$log"
    echo "=== $name: rc=$rc after $((SECONDS - START))s"
}

# ---- 0. versions ---------------------------------------------------------------------------------
{
    echo "date: $(date -u +%FT%TZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed files"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi: none"
    "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (no CUDA)")
EOF
} 2>&1 | tee "$OUT/env.txt"
GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

# ---- 1. install ----------------------------------------------------------------------------------
if ! "$PY" -c "import fvcore, xdist" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >>"$OUT/env.txt" 2>&1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import ssnbench.kernels" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/env.txt" 2>&1
fi
"$PY" -c "import ssnbench.kernels, ssnbench.kernels.flops; print('ssnbench.kernels import ok')" 2>&1 | tee -a "$OUT/env.txt"

# every autotune candidate compiled once, in parallel, into Triton's disk cache: later steps that
# autotune (profile, models, kernel benchmark) then only time them
if [[ "$GPU" == 1 ]]; then
    "$PY" -c "from ssnbench.kernels.precompile import precompile; print('precompile', precompile((32, 64), workers=16))" \
        2>&1 | tail -n 1 | tee -a "$OUT/env.txt"
fi

# ---- 2. GPU kernel tests (fixed configs: no autotune compile storm) -----------------------------
if [[ "${SKIP_TESTS:-0}" != 1 ]]; then
    XDIST=()  # parallel workers: Triton compiles are CPU-bound and the box has 16 cores
    if [[ "$GPU" == 1 ]] && "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n "${TEST_WORKERS:-4}"); fi
    SSNBENCH_XATTN_AUTOTUNE=0 step kernel_tests "$T_TESTS" "$OUT/kernel_tests.log" \
        "$PY" -m pytest -q -p no:cacheprovider "${XDIST[@]}" -m gpu -rs --durations=8 $TEST_FILES
fi

# ---- 3. host-cost profile ------------------------------------------------------------------------
if [[ "${SKIP_PROFILE:-0}" != 1 && "$GPU" == 1 ]]; then
    PYTHONUNBUFFERED=1 step profile "$T_PROFILE" "$OUT/profile_xattn.log" \
        "$PY" scripts/profile_xattn.py --out "$OUT" ${PROFILE_ARGS:-}
fi

# ---- 4. model benchmarks (issue 5): scripts/gpu_bench_models.sh -------------------------------
# `ssnbench bench models` on suites/bench_gpu.yaml + `pytest tests/benchmarks`; writes models.log,
# pytest_benchmarks.log and models.tar.gz into $OUT.
if [[ "${SKIP_MODELS:-0}" != 1 ]]; then
    step models_bench $((T_MODELS + T_PYBENCH + 30)) /tmp/gpu_bench_models.console \
        env OUT="$OUT" PY="$PY" T_MODELS="$T_MODELS" T_PYBENCH="$T_PYBENCH" bash scripts/gpu_bench_models.sh
fi

# ---- 5. kernel benchmark (last: its JSON is rewritten after every shape, a cut run keeps rows) ---
if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
    BENCH_ARGS=(--json "$OUT/bench_kernels.json")
    [[ -n "${BENCH_METHODS:-}" ]] && BENCH_ARGS+=(--methods "$BENCH_METHODS")
    [[ -n "${BENCH_LENGTHS:-}" ]] && BENCH_ARGS+=(--lengths "$BENCH_LENGTHS")
    [[ -n "${BENCH_DIMS:-}" ]] && BENCH_ARGS+=(--head-dims "$BENCH_DIMS")
    if [[ "${QUICK:-0}" == 1 || "$GPU" != 1 ]]; then BENCH_ARGS+=(--quick); fi
    COLUMNS=160 step bench_kernels "$T_BENCH" "$OUT/bench_kernels.log" \
        "$PY" -m ssnbench bench kernels "${BENCH_ARGS[@]}"
fi

# ---- 6. summary (printed last) ---------------------------------------------------------------------
{
    echo
    echo "================ gpu_check summary ($((SECONDS - START))s, gpu=$GPU) ================"
    for name in "${!STATUS[@]}"; do printf '%-18s rc=%s\n' "$name" "${STATUS[$name]}"; done | sort
    [[ -f "$OUT/kernel_tests.log" ]] && echo "kernel tests: $(grep -E '(passed|failed|error|skipped)' "$OUT/kernel_tests.log" | tail -n 1)"
    [[ -f "$OUT/profile_xattn.log" ]] && { echo "--- profile (host us per call; blocks; steps)"; grep -E '^\{|^=== ssn' "$OUT/profile_xattn.log"; }
    if [[ -f "$OUT/bench_kernels.json" ]]; then
        "$PY" - "$OUT/bench_kernels.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
env, peaks = r["environment"], r.get("peaks") or {}
if not r.get("complete", True):
    print("NOTE: benchmark cut short (time limit); rows so far only")
if r.get("precompile"):
    print("precompile:", r["precompile"])
print(f"device {env['device_name']} torch {env['torch']} triton {env['triton']}",
      f"| bf16 mm {peaks.get('bf16_matmul_tflops', 0):.0f} TFLOP/s copy {peaks.get('copy_tbps', 0):.2f} TB/s" if peaks else "")
rows = {(x["L"], x["D"], x["method"]): x for x in r["rows"] if "error" not in x}
print(f"{'L':>5} {'D':>3} | {'fused fwd':>9} {'sdpa2 fwd':>9} {'x':>5} {'floor':>5} | {'fused f+b':>9} {'best f+b':>9} {'x':>5} {'floor':>5} | fixed-cfg fwd/f+b")
for s in r["speedups"]:
    L, D = s["L"], s["D"]
    f, q, fx = rows.get((L, D, "fused"), {}), rows.get((L, D, "sdpa_2calls"), {}), rows.get((L, D, "fused_fixed"), {})
    b = rows.get((L, D, s.get("fwdbwd_best_baseline")), {})
    ok = lambda k: "ok" if s.get(k) else ("MISS" if k in s else "-")
    print(f"{L:>5} {D:>3} | {f.get('fwd_ms', 0):9.4f} {q.get('fwd_ms', 0):9.4f} {s.get('fwd_speedup_vs_sdpa_2calls', 0):5.2f} {ok('fwd_floor_met'):>5} |"
          f" {f.get('fwdbwd_ms', 0):9.4f} {b.get('fwdbwd_ms', 0):9.4f} {s.get('fwdbwd_speedup_vs_best', 0):5.2f} {ok('fwdbwd_floor_met'):>5} |"
          f" {fx.get('fwd_ms', 0):.4f}/{fx.get('fwdbwd_ms', 0):.4f}")
if any("fwd_graph_speedup_vs_sdpa_2calls" in s or "fwdbwd_graph_speedup_vs_best" in s for s in r["speedups"]):
    print("device time (CUDA-graph replay):")
    print(f"{'L':>5} {'D':>3} | {'fused fwd':>9} {'sdpa2 fwd':>9} {'x':>5} {'floor':>5} | {'fused f+b':>9} {'best f+b':>9} {'x':>5} {'floor':>5} best")
    for s in r["speedups"]:
        L, D = s["L"], s["D"]
        f, q = rows.get((L, D, "fused"), {}), rows.get((L, D, "sdpa_2calls"), {})
        best = s.get("fwdbwd_graph_best_baseline")
        b = rows.get((L, D, best), {})
        ok = lambda k: "ok" if s.get(k) else ("MISS" if k in s else "-")
        print(f"{L:>5} {D:>3} | {f.get('fwd_graph_ms', 0):9.4f} {q.get('fwd_graph_ms', 0):9.4f} {s.get('fwd_graph_speedup_vs_sdpa_2calls', 0):5.2f} {ok('fwd_graph_floor_met'):>5} |"
              f" {f.get('fwdbwd_graph_ms', 0):9.4f} {b.get('fwdbwd_graph_ms', 0):9.4f} {s.get('fwdbwd_graph_speedup_vs_best', 0):5.2f} {ok('fwdbwd_graph_floor_met'):>5} {best}")
if any(m == "fused_notails" for (_, _, m) in rows):
    print("tails A/B (same configs; x = no-tails ms / tails ms, > 1: the tails help):")
    print(f"{'L':>5} {'D':>3} | {'fwd':>7} {'notails':>7} {'x':>5} | {'f+b':>7} {'notails':>7} {'x':>5} | graph fwd x, f+b x")
    for s in r["speedups"]:
        L, D = s["L"], s["D"]
        f, n = rows.get((L, D, "fused"), {}), rows.get((L, D, "fused_notails"), {})
        if not n:
            continue
        ratio = lambda k: n.get(k, 0) / f[k] if f.get(k) else 0
        print(f"{L:>5} {D:>3} | {f.get('fwd_ms', 0):7.4f} {n.get('fwd_ms', 0):7.4f} {ratio('fwd_ms'):5.2f} |"
              f" {f.get('fwdbwd_ms', 0):7.4f} {n.get('fwdbwd_ms', 0):7.4f} {ratio('fwdbwd_ms'):5.2f} |"
              f" {ratio('fwd_graph_ms'):5.2f} {ratio('fwdbwd_graph_ms'):5.2f}")
if not r["speedups"]:
    print(r.get("note") or "no fused rows")
for x in r["rows"]:
    if "error" in x:
        print("error:", x["L"], x["D"], x["method"], x["error"])
    for k in ("fwd_graph_error", "fwdbwd_graph_error"):
        if k in x:
            print("graph error:", x["L"], x["D"], x["method"], k, x[k])
EOF
    fi
    [[ -f "$OUT/models.log" ]] && { echo "--- models (tail)"; tail -n 12 "$OUT/models.log"; }
    [[ -f "$OUT/pytest_benchmarks.log" ]] && echo "pytest benchmarks: $(tail -n 1 "$OUT/pytest_benchmarks.log")"
} 2>&1 | tee "$OUT/summary.txt"
# at most 8 files come back: pack the logs
(cd "$OUT" && LOGS=$(ls -- *.log env.txt 2>/dev/null) && [[ -n "$LOGS" ]] && tar czf logs.tar.gz $LOGS && rm -f $LOGS)
echo "files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
