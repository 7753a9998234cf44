#!/usr/bin/env bash
# The GPU measurements in one run of about 8 minutes (the runbook: benchmarks/GPU_RUNS.md).
# Needs: torch + timm + numpy + scipy + matplotlib + pyyaml (no rasterio/pyogrio), a CUDA GPU,
# and bench-out/gpu-data/city.tar.gz from `python benchmarks/gpu_evidence.py make-data
# --out bench-out/gpu-data` (on any machine with the GDAL stack).
# Writes everything under ${OUT:-bench-out/gpu-results}; each part has its own time limit and
# writes its results as it goes, so a part that runs out of time still leaves what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out/gpu-results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
DATA=${DATA:-bench-out/gpu-data/city.tar.gz}
EVIDENCE_BUDGET=${EVIDENCE_BUDGET:-230}
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/gpu_run.log"; }

# DataLoader workers hand batches over through /dev/shm: use none where it is small.
SHM_MB=$(df -Pm /dev/shm 2>/dev/null | awk 'NR==2{print $4}')
WORKERS=${WORKERS:-$([ "${SHM_MB:-0}" -ge 2048 ] && echo 3 || echo 0)}
log "environment (/dev/shm ${SHM_MB:-?} MB free: ${WORKERS} data loader workers)"
{ nvidia-smi -L; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name(0))"; } 2>&1 | tee -a "$OUT/gpu_run.log"
git log -1 --format='commit %h %cI' 2>/dev/null | tee -a "$OUT/gpu_run.log"

# 1. Evidence: DCSwin, UNetFormer x 5 schemes x 3 seeds on the packed city (~4.5 min).
log "gpu_evidence.py run (budget ${EVIDENCE_BUDGET} s)"
timeout 300 python3 benchmarks/gpu_evidence.py run --data "$DATA" --device cuda --out "$OUT" \
  --work /tmp/evidence --budget-s "$EVIDENCE_BUDGET" --workers "$WORKERS" 2>&1 | grep -v "^INFO" | tail -n 40 >>"$OUT/gpu_run.log"

# 2. Training step at batch 32 (MS/CS goal: at most +20%; CT: at most +10%), bf16 (~1 min).
log "bench_step.py batch 32 bf16"
timeout 90 python3 benchmarks/bench_step.py --device cuda --size 512 --batch 32 --amp bf16 \
  --warmup 2 --iters 6 --out "$OUT/step_b32_cuda.md" 2>&1 | tail -n 3 >>"$OUT/gpu_run.log"

# 3. The same step with channels_last, DCSwin only (~15 s).
log "bench_step.py channels_last"
timeout 40 python3 benchmarks/bench_step.py --device cuda --size 512 --batch 32 --amp bf16 \
  --presets DCSwin --warmup 2 --iters 6 --channels-last --out "$OUT/step_b32_cl_cuda.md" 2>&1 | tail -n 3 >>"$OUT/gpu_run.log"

# 4. train.compile: the step with torch.compile of the model forward, DCSwin none / CT-CL.
log "bench_step.py compile"
timeout 100 python3 benchmarks/bench_step.py --device cuda --size 512 --batch 32 --amp bf16 \
  --presets DCSwin --modes none CT-CL --compile --warmup 3 --iters 10 \
  --out "$OUT/step_b32_compile_cuda.md" 2>&1 | tail -n 3 >>"$OUT/gpu_run.log"

# 5. The engine vs a bare loop on the GPU (packed city, DCSwin, batch 8) (~1 min).
log "bench_engine.py cuda"
timeout 70 python3 benchmarks/bench_engine.py --device cuda --packed "$DATA" \
  --preset dcswin --epochs 4 --rounds 1 --set train.batch_size=8 --set data.num_workers="$WORKERS" \
  --set train.val_every=4 --set train.save_every=4 --work /tmp/engine \
  --out-dir "$OUT" --name engine_gpu 2>&1 | grep -v "^INFO" | tail -n 12 >>"$OUT/gpu_run.log"
log "done"
ls -la "$OUT" | tee -a "$OUT/gpu_run.log"
