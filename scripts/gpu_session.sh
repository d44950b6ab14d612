#!/usr/bin/env bash
# One device session (about 9 minutes on one H100/H200): measure the stage-1 throughput, then train six priors
# (groups A, B, C; RGB first, three at once; then gray) from scratch at DEPTH x FEATURES (default 20 x 64, the
# paper's size, which the 2-core CPU cannot train to length) with the shipped priors' recipe (stage 1's
# light-noise defaults and an EMA of the weights, docs/priors.md) on the device-resident sampler, and bring the
# exported priors back under $OUT. They are candidates: checkpoints/ is never written; shipping them is a
# decision measured here afterwards. Stage-2 checks (with these priors) only with STAGE2=1.
# Prepared here, run there from the source tree (nothing can be installed from the network there):
#
#   python scripts/pack_corpus.py --out data/corpus_small --train-crop 320     # < 30 MiB of PNG crops
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#     albumentations albucore simsimd stringzilla pydantic pydantic_core annotated-types typing-inspection \
#     typing_extensions jsonargparse docstring_parser typeshed_client   # what the device lacked on 2026-11-27
#   device run: bash scripts/gpu_session.sh   (carry .whl data/corpus_small; data/dev too with STAGE2=1)
#   here, first: SMOKE=1 bash scripts/gpu_session.sh   (CPU, tiny sizes, every step runs; exports to $WORK only)
#
# Settings (environment): PHASES ("rgb gray"; "rgb" or "gray" for one call each), RGB_MINUTES / GRAY_MINUTES
# (training time of each phase, its three priors at once), RGB_STEPS / GRAY_STEPS (length of the cosine
# decay: set it to what the phase's time allows, e.g. from the benchmark's patches/s divided by 3 priors and
# 128 patches a step), LR (1e-3, the BF-CNN rate), DEPTH / FEATURES (20 / 64), PRIORS_OUT ($WORK/priors).
# Back under $OUT: log.txt, throughput.txt, priors_rgb.tar / priors_gray.tar (exported priors + MANIFEST.json),
# training.tgz (per-prior logs, TensorBoard events, hparams), stage2.tgz with STAGE2=1.
set -u
START=$(date +%s)
OUT=${OUT:-runs/gpu_session}
WORK=${WORK:-/tmp/gpu_session}
PHASES=${PHASES:-rgb gray}
LR=${LR:-1e-3}
if [ "${SMOKE:-0}" = 1 ]; then
  CORPUS=${CORPUS:-$WORK/corpus_smoke}; RGB_MINUTES=0.3; GRAY_MINUTES=0.3; RGB_STEPS=2; GRAY_STEPS=2
  RECIPE="--images-per-batch 2 --patches-per-image 2 --val-every 2 --precision 32-true"
  BENCH="--batch 4 --patch 16 --steps 1 --repeats 1 --warmup 1 --images 2 --image-size 64 --device cpu --precision 32-true"
  PRIORS_OUT=${PRIORS_OUT:-$WORK/priors}
else
  CORPUS=${CORPUS:-data/corpus_small}; RGB_MINUTES=${RGB_MINUTES:-4}; GRAY_MINUTES=${GRAY_MINUTES:-2.5}
  RGB_STEPS=${RGB_STEPS:-12000}; GRAY_STEPS=${GRAY_STEPS:-7000}
  RECIPE="--val-every 1000 --precision bf16-mixed --depth ${DEPTH:-20} --features ${FEATURES:-64} --ema-decay 0.995"
  BENCH="--steps 20 --repeats 3 --warmup 5"  # (50x50, batch 128, scales 1-0.7: train_priors defaults)
  PRIORS_OUT=${PRIORS_OUT:-$WORK/priors}
fi
mkdir -p "$OUT" "$WORK" "$PRIORS_OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1  # the probe below imports albumentations
if ! python3 -c "import albumentations, jsonargparse" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=.:/tmp/site || exit 1
else
  export PYTHONPATH=.
fi
if [ "${SMOKE:-0}" = 1 ] && [ ! -f "$CORPUS/manifest.csv" ]; then  # 64-pixel crops of the corpus: quick to decode
  python scripts/pack_corpus.py --corpus data/corpus --out "$CORPUS" --train-crop 64 --test-crop 64 || exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
# 0. throughput: bare network step against the real step on the device sampler (issue target: ratio >= 0.9)
timeout 120 python -m benchmarks.prior_throughput $BENCH 2>&1 | grep -v "^\s*$" | tee "$OUT/throughput.txt"
# 1-2. training phases, RGB first; each prior starts from scratch (or resumes its last.ckpt)
for phase in $PHASES; do
  if [ "$phase" = rgb ]; then minutes=$RGB_MINUTES; steps=$RGB_STEPS; else minutes=$GRAY_MINUTES; steps=$GRAY_STEPS; fi
  keys="A-$phase B-$phase C-$phase"
  echo "== $phase: $keys, $minutes min, cosine over $steps steps, lr $LR, at $(($(date +%s) - START)) s"
  timeout "$(python3 -c "print(int(60 * $minutes + 150))")" python scripts/train_priors.py --corpus "$CORPUS" \
    --work "$WORK/groups" --runs "$WORK/runs" --logs "$WORK/logs" --out "$PRIORS_OUT" --init "$WORK/scratch" --parallel \
    --only $keys --minutes "$minutes" --max-steps "$steps" --lr "$LR" $RECIPE \
    || echo "== $phase training failed or was cut (exit $?)"
  for f in "$WORK"/logs/*-"$phase".log; do echo "-- $f"; grep -E "max_time|max_steps|Error|error" "$f" | tail -n 3; done
  tar -cf "$OUT/priors_$phase.tar" -C "$PRIORS_OUT" $(cd "$PRIORS_OUT" && ls bfdncnn_"$phase"_*.pt MANIFEST.json 2>/dev/null)
done
echo "== priors done at $(($(date +%s) - START)) s"
tar -czf "$OUT/training.tgz" -C "$WORK" logs $(cd "$WORK" && ls -d runs/prior_training/*/events* runs/prior_training/*/hparams.yaml 2>/dev/null)
# 3. optional: the stage-2 checks with the new priors
if [ "${STAGE2:-0}" = 1 ]; then
  SCOREDVI_CHECKPOINTS="$PRIORS_OUT" OUT="$WORK/gpu_check" DEADLINE_AT=$((START + ${TOTAL:-550})) bash benchmarks/gpu_check.sh
  tar -czf "$OUT/stage2.tgz" -C "$WORK" --exclude='*.png' --exclude='*.tif' --exclude='*.npy' gpu_check
fi
echo "== all done at $(($(date +%s) - START)) s"
