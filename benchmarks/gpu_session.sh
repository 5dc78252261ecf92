#!/usr/bin/env bash
# One GPU session, about 7 minutes on one H100/H200-class card: the GPU figures of issue 15, written under $OUT
# (default: ./gpu-figures). Run from the repository root:
#
#     bash benchmarks/gpu_session.sh                 # on the GPU machine: throughput ddp diffusion
#     bash benchmarks/gpu_session.sh gpt overhead    # named parts only
#     SMOKE=1 bash benchmarks/gpu_session.sh         # on a CPU: the same steps at toy sizes (checks the script)
#
# throughput  benchmarks.throughput at the CIFAR-10 sizes, batch 128, fp32 / bf16 / channels_last / compile:
#             suite UNet vs diffusers UNet2DModel, SDE-DPM-Solver++ vs diffusers' scheduler, suite GPT vs a plain
#             GPT, KV-cached sampling, FLOPs and MFU;
# ddp         trainer=ddp trainer.devices=1 compile=true through train.py (the default VAE on mnist5k, 200 steps);
# diffusion   a 2-minute diffusion training at the CIFAR size (experiment=cifar10_diffusion) on 32x32 RGB patches
#             cut from scikit-learn's two sample photos (a class each), bf16-mixed, with its final evaluation;
# gpt         the GPT rows of benchmarks.throughput alone (fp32, bf16);
# overhead    the suite's training step (Lightning, callbacks, logging) against a plain loop on the GPU: the
#             CIFAR-size diffusion step with and without EMA and gradient clipping, and the default VAE.
# Python packages the machine lacks travel as wheels in .whl/ (hydra-core, omegaconf, antlr4, mlxtend, diffusers).
set -uo pipefail
OUT=${OUT:-gpu-figures}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
PY=${PY:-python3}
log() { echo "[gpu_session $(date +%T)] $*" | tee -a "$OUT/session.log"; }

if [ "${SMOKE:-0}" = 1 ]; then
  TP=(--device cpu --size small --batch 2 --gpt-batch 1 --sample-batch 2 --steps 1 --repeats 1 --kv-tokens 8
      --variants fp32 bf16)
  DDP=(trainer.accelerator=cpu trainer.max_steps=3 metrics.n_samples=64 trainer.precision=32-true)
  DIFF=(trainer=cpu trainer.precision=32-true trainer.max_time=00:00:00:20 metrics.n_samples=64
        model.denoiser.base_width=16 data.batch_size=8 sampler.steps=2)
  OH=(trainer.accelerator=cpu trainer.precision=32-true model.denoiser.base_width=16 data.batch_size=8)
  OH_VAE=(trainer.accelerator=cpu data=digits)
  N_PATCHES=300
else
  TP=(--device cuda --size cifar --batch 128 --gpt-batch 16 --sample-batch 256 --steps 8 --repeats 2)
  DDP=(trainer.accelerator=gpu trainer.max_steps=200 metrics.n_samples=1000 trainer.precision=bf16-mixed)
  DIFF=(trainer.max_time=00:00:02:00 metrics.n_samples=2000)
  OH=(trainer.accelerator=gpu trainer.precision=bf16-mixed)
  OH_VAE=(trainer.accelerator=gpu)
  N_PATCHES=${N_PATCHES:-10000}
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >> "$OUT/session.log" 2>&1
fi
$PY -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__,
'torchmetrics', torchmetrics.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/session.log"

throughput() {
  log "throughput"
  timeout 230 $PY -m benchmarks.throughput "${TP[@]}" --json "$OUT/throughput.json" 2>&1 \
    | grep -v -i warn | tee "$OUT/throughput.md"
}

gpt() {
  log "gpt"
  timeout 80 $PY -m benchmarks.throughput "${TP[@]}" --only gpt --variants fp32 bf16 --json "$OUT/gpt.json" 2>&1 \
    | grep -v -i warn | tee "$OUT/gpt.md"
}

ddp() {
  log "trainer=ddp trainer.devices=1 compile=true"
  timeout 120 $PY train.py model=vae trainer=ddp trainer.devices=1 compile=true trainer.max_epochs=-1 \
    "${DDP[@]}" callbacks.progress_bar=null paths.log_dir=/tmp/gpu-logs/ddp > "$OUT/ddp.log" 2>&1
  echo "exit $?" >> "$OUT/ddp.log"
  tail -n 25 "$OUT/ddp.log"
  find /tmp/gpu-logs/ddp -name metrics.json -exec cp {} "$OUT/ddp_metrics.json" \;
}

patches() {  # 32x32 RGB patches of scikit-learn's two sample photos, one class folder per photo
  [ -d /tmp/rgb32 ] && return
  $PY -m benchmarks.gpu_patches "$N_PATCHES" /tmp/rgb32
}

diffusion() {
  log "two-minute diffusion at the CIFAR size on generated 32x32 RGB images"
  patches
  timeout 210 $PY train.py experiment=cifar10_diffusion data=image_folder data.path=/tmp/rgb32 data.image_size=32 \
    "${DIFF[@]}" callbacks.progress_bar=null paths.log_dir=/tmp/gpu-logs/diffusion > "$OUT/diffusion.log" 2>&1
  echo "exit $?" >> "$OUT/diffusion.log"
  tail -n 25 "$OUT/diffusion.log"
  find /tmp/gpu-logs/diffusion -name metrics.json -exec cp {} "$OUT/diffusion_metrics.json" \;
  find /tmp/gpu-logs/diffusion -name samples.png -exec cp {} "$OUT/diffusion_samples.png" \;
}

overhead() {
  log "overhead: suite step (Lightning, callbacks, logging) vs a plain loop, same network, data and precision"
  patches
  local cifar=(model=diffusion experiment=cifar10_diffusion data=image_folder data.path=/tmp/rgb32 "${OH[@]}")
  { echo "diffusion, CIFAR size, preset (EMA, gradient clipping)"
    timeout 90 $PY -m benchmarks.overhead "${cifar[@]}"
    echo "diffusion, CIFAR size, no EMA, no clipping"
    timeout 70 $PY -m benchmarks.overhead "${cifar[@]}" callbacks.ema=null trainer.gradient_clip_val=null
    echo "default VAE, mnist5k"
    timeout 50 $PY -m benchmarks.overhead model=vae "${OH_VAE[@]}"
  } > "$OUT/overhead.log" 2>&1
  grep -E "^\||^machine|^diffusion|^default|rror" "$OUT/overhead.log" | tee "$OUT/overhead.md"
}

PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(throughput ddp diffusion)
for part in "${PARTS[@]}"; do "$part"; done
log "done"
