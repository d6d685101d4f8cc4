#!/usr/bin/env bash
# make gpu-check: everything only a CUDA GPU can show, in one call.
#   1. the gpu-marked tests; 2. each family's built-in recipe for a few hundred steps in bf16;
#   3. the transformer throughput benchmark (GPT-2 124M and 350M at context 1024, eager and compiled).
# Usage: bash benchmarks/gpu_check.sh OUT_DIR   (full numbers land in OUT_DIR; a short table is printed last)
set -uo pipefail
OUT="${1:-gpu-check-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
STEPS="${GPU_CHECK_STEPS:-300}"
status=0
summary="$OUT/summary.txt"
: >"$summary"

echo "== gpu tests" | tee -a "$summary"
"$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.log" | tail -3
tail -1 "$OUT/gpu-tests.log" >>"$summary"
grep -qE " passed" "$OUT/gpu-tests.log" && ! grep -qE "failed|error" "$OUT/gpu-tests.log" || status=1

echo "== recipes on the GPU, bf16, $STEPS steps" | tee -a "$summary"
for recipe in cnn/glyphs rnn/builtin-char transformer/builtin-char autoencoder/glyphs gan/glyphs; do
    name="${recipe//\//-}"
    start=$(date +%s)
    "$PY" -m bigtrain fit --recipe "$recipe" --run_dir "$OUT/runs/$name" --trainer.accelerator gpu \
        --trainer.precision bf16-mixed --trainer.max_steps "$STEPS" --trainer.max_epochs -1 \
        --trainer.enable_progress_bar false --data.num_workers 4 >"$OUT/$name.log" 2>&1
    rc=$?
    metrics=$("$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print({k: round(v, 4) for k, v in m.items()})" \
        "$OUT/runs/$name/metrics.json" 2>/dev/null)
    echo "$recipe rc=$rc $(( $(date +%s) - start ))s $metrics" | tee -a "$summary"
    [ $rc = 0 ] || status=1
done
cp -r "$OUT"/runs/*/metrics.json "$OUT" 2>/dev/null || true

echo "== transformer throughput (bf16, context 1024)" | tee -a "$summary"
"$PY" -m benchmarks.throughput --device cuda --presets gpt2-124m gpt2-350m --context 1024 --batch 16 \
    --steps 20 --warmup 5 --out "$OUT" 2>&1 | tee "$OUT/throughput.log" | tail -8 >>"$summary" || status=1

echo
cat "$summary"
exit $status
