#!/usr/bin/env bash
# GPU check: parity on the GPU, Astromer 1 / 2 throughput at batch 256 and 1024 in float32 and bf16,
# and a short pretraining run; prints one table at the end.
#
#   bench/gpu_check.sh                # CUDA if torch sees it, otherwise the CPU fallback
#   GPU_CHECK_FORCE_CPU=1 bench/gpu_check.sh   # the CPU fallback on purpose (what the tests run)
#
# Environment: PYTHON (default .venv/bin/python, else python3), LCDASH_SHARED (default ../shared),
# GPU_CHECK_OUT (a folder for the logs and JSON; default a temporary one).
# The CPU fallback runs the same steps small (batch 8 / 16, 1 round, the shipped demo encoder and a
# random-init Astromer 1 when ../shared is absent), so that the script itself is exercised anywhere.
# Exit status: non-zero when a step fails; every step still runs and the table shows which failed.
set -u -o pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
SHARED=${LCDASH_SHARED:-../shared}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t lcdash-gpu-check-XXXXXX)}
mkdir -p "$OUT"

if [ "${GPU_CHECK_FORCE_CPU:-0}" = "1" ]; then
    HAS_CUDA=0
else
    HAS_CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
fi

if [ "$HAS_CUDA" = "1" ]; then
    MODE=cuda
    DEVICE=cuda
    BATCHES="256 1024"
    ROUNDS=5
    MODELS=a1,a2
    TRAIN_BATCH=256
    TRAIN_STEPS=20
    "$PYTHON" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, \
'| CUDA', torch.version.cuda, '| bf16', torch.cuda.is_bf16_supported())"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
else
    MODE=cpu-fallback
    DEVICE=cpu
    BATCHES="8 16"
    ROUNDS=1
    MODELS=a1,demo
    TRAIN_BATCH=8
    TRAIN_STEPS=2
    echo "no CUDA device: CPU fallback (small sizes; the numbers say nothing about a GPU)"
fi
echo "mode $MODE, output in $OUT"

declare -A STATUS
run_step() {  # name, command...: run it, keep its log, remember pass / FAIL
    local name=$1
    shift
    echo "== $name: $*"
    if "$@" >"$OUT/$name.log" 2>&1; then STATUS[$name]=pass; else STATUS[$name]="FAIL (exit $?)"; fi
    tail -n 25 "$OUT/$name.log"
}

# 1. parity: the golden Astromer 1 outputs with the model and inputs on the device
run_step parity env LCDASH_SHARED="$SHARED" LCDASH_TEST_DEVICE="$DEVICE" \
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_device.py -rs

# 2. throughput: float32 and bf16 (bf16 is forced on the CPU fallback, where it may be emulated)
run_step throughput "$PYTHON" bench/encoder_throughput.py --shared "$SHARED" --devices "$DEVICE" \
    --batches $BATCHES --precisions float32 bf16 --models "$MODELS" --rounds "$ROUNDS" --warmup 1 \
    --no-e2e --no-train --json "$OUT/throughput.json"

# 3. a short pretraining run (lcdash.train.pretrain: bf16 autocast on CUDA)
run_step pretrain "$PYTHON" bench/encoder_throughput.py --shared "$SHARED" --devices "$DEVICE" \
    --models "$MODELS" --no-inference --no-e2e \
    --train-batch "$TRAIN_BATCH" --train-steps "$TRAIN_STEPS" --json "$OUT/pretrain.json"

# one table
"$PYTHON" - "$OUT" "$MODE" "${STATUS[parity]}" "${STATUS[throughput]}" "${STATUS[pretrain]}" <<'EOF'
import json, sys
from pathlib import Path

out, mode, parity, thr, pre = Path(sys.argv[1]), *sys.argv[2:]
rows = [("step", "model", "device", "precision", "batch", "rate", "note")]
rows.append(("parity", "astromer1 golden", mode, "float32 / bf16", "", parity, "tests/test_device.py"))
for name, status in (("throughput", thr), ("pretrain", pre)):
    path = out / f"{name}.json"
    if not path.exists():
        rows.append((name, "", mode, "", "", status, "no JSON written"))
        continue
    res = json.loads(path.read_text())
    if name == "throughput":
        for r in res["inference"]:
            if r["path"] != "now":
                continue
            note = f"x float32 {r['x_float32']:.2f}, max err {r['bf16_max_abs']:.2g}" if "x_float32" in r else ""
            rows.append((name, r["model"], r["device"], r["precision"], str(r["batch"]),
                         f"{r['lc_per_s']:.0f} LC/s", note + (f" peak {r['peak_mb']:.0f} MB")))
    else:
        for r in res["training"]:
            mem = f"CUDA max {r['cuda_max_allocated_mb']:.0f} MB" if "cuda_max_allocated_mb" in r else ""
            rows.append((name, r["model"], r["device"], "bf16 autocast" if r["device"] == "cuda" else "float32",
                         "", f"{r['windows_per_s']:.0f} windows/s", mem))
    if status != "pass":
        rows.append((name, "", mode, "", "", status, f"see {out / (name + '.log')}"))
w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
print(f"\n== lcdash GPU check ({mode}) ==")
for i, r in enumerate(rows):
    print("  ".join(c.ljust(w[j]) for j, c in enumerate(r)).rstrip())
    if i == 0:
        print("  ".join("-" * x for x in w))
EOF

for name in parity throughput pretrain; do
    [ "${STATUS[$name]}" = pass ] || exit 1
done
exit 0
