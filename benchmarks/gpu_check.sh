#!/usr/bin/env bash
# make gpu-check: everything only a CUDA GPU can show, in one call.
#   1. the gpu-marked tests; 2. each family's built-in recipe for a few hundred steps in bf16, plus one
#   FSDP2 bf16 run; 3. the transformer throughput benchmark (GPT-2 124M and 350M at context 1024, eager
#   and compiled).
# Usage: bash benchmarks/gpu_check.sh OUT_DIR
# OUT_DIR gets summary.txt (also printed last), gpu-tests.log, recipes.log and throughput.json.
set -uo pipefail
OUT="${1:-gpu-check-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
STEPS="${GPU_CHECK_STEPS:-300}"
RUNS="$(mktemp -d)"
status=0
summary="$OUT/summary.txt"
: >"$summary"
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)" | tee -a "$summary"

echo "== gpu tests" | tee -a "$summary"
"$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider >"$OUT/gpu-tests.log" 2>&1 || status=1
tail -1 "$OUT/gpu-tests.log" | tee -a "$summary"

run_recipe() {  # name, then bigtrain fit arguments
    local name="$1"; shift
    local start rc metrics
    start=$(date +%s)
    echo "=== $name: $*" >>"$OUT/recipes.log"
    "$PY" -m bigtrain fit "$@" --run_dir "$RUNS/$name" --trainer.accelerator gpu --trainer.devices 1 \
        --trainer.max_steps "$STEPS" --trainer.max_epochs -1 --trainer.enable_progress_bar false \
        >>"$OUT/recipes.log" 2>&1
    rc=$?
    metrics=$("$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print({k: round(v, 4) for k, v in m.items()})" \
        "$RUNS/$name/metrics.json" 2>/dev/null)
    echo "$name rc=$rc $(( $(date +%s) - start ))s $metrics" | tee -a "$summary"
    [ "$rc" = 0 ] || status=1
}

echo "== recipes on the GPU, bf16-mixed, $STEPS steps" | tee -a "$summary"
for recipe in cnn/glyphs rnn/builtin-char transformer/builtin-char autoencoder/glyphs gan/glyphs; do
    run_recipe "${recipe//\//-}" --recipe "$recipe" --trainer.precision bf16-mixed
done
run_recipe transformer-fsdp-bf16 --recipe transformer/builtin-char --trainer.strategy fsdp \
    --trainer.strategy.mixed_precision bf16

echo "== transformer throughput (bf16, context 1024, batch 16)" | tee -a "$summary"
"$PY" -m benchmarks.throughput --device cuda --presets gpt2-124m gpt2-350m --context 1024 --batch 16 \
    --steps 20 --warmup 5 --out "$OUT" >"$OUT/throughput.log" 2>&1 || status=1
tail -8 "$OUT/throughput.log" >>"$summary"

echo
cat "$summary"
exit $status
