#!/usr/bin/env bash
# One device session (about 9 minutes on one H100/H200): train the six shipped priors further, all at
# once, then run the stage-2 checks of benchmarks/gpu_check.sh with the new priors, under one deadline.
# Prepared here, run there from the source tree (nothing can be installed from the network there):
#
#   python scripts/pack_corpus.py --out data/corpus_small --train-crop 320     # < 30 MiB of PNG crops
#   mkdir -p data/dev && cp ../shared/data/dev/*.png data/dev/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#     albumentations albucore simsimd stringzilla pydantic pydantic_core annotated-types typing-inspection \
#     typing_extensions jsonargparse docstring_parser typeshed_client   # what the device lacked on 2026-11-27
#   device run: bash scripts/gpu_session.sh   (carry .whl data/corpus_small data/dev)
#
# Back under $OUT: log.txt, priors_rgb.tar / priors_gray.tar (exported priors + MANIFEST.json),
# training.tgz (per-prior logs, TensorBoard events), stage2.tgz (the checks' tables and CSVs).
set -u
START=$(date +%s)
OUT=${OUT:-runs/gpu_session}
WORK=${WORK:-/tmp/gpu_session}
TRAIN_MINUTES=${TRAIN_MINUTES:-2.5}
TOTAL=${TOTAL:-550}
TRAIN_ARGS=${TRAIN_ARGS:---max-steps 2500 --lr 3e-4 --patch-size 64 --images-per-batch 8 --patches-per-image 8 --workers 2 --val-every 250}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1  # the probe below imports albumentations
if ! python3 -c "import albumentations, jsonargparse" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=.:/tmp/site || exit 1
else
  export PYTHONPATH=.
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
# 1. priors: a low-rate cosine phase from the shipped weights, 64 patches of 64x64 per step, six trainings at once
timeout $((START + 260 - $(date +%s))) python scripts/train_priors.py --corpus data/corpus_small --work "$WORK/groups" \
  --runs "$WORK/runs" --parallel --logs "$WORK/logs" --minutes "$TRAIN_MINUTES" $TRAIN_ARGS \
  || echo "== prior training failed or was cut (exit $?)"
echo "== priors done at $(($(date +%s) - START)) s"
for f in "$WORK"/logs/*.log; do echo "-- $f"; grep -E "max_time|max_steps|Error|error" "$f" | tail -n 3; done
tar -cf "$OUT/priors_rgb.tar" checkpoints/bfdncnn_rgb_*.pt checkpoints/MANIFEST.json
tar -cf "$OUT/priors_gray.tar" checkpoints/bfdncnn_gray_*.pt checkpoints/MANIFEST.json
tar -czf "$OUT/training.tgz" -C "$WORK" logs $(cd "$WORK" && ls -d runs/prior_training/*/events* runs/prior_training/*/hparams.yaml 2>/dev/null)
# 2. stage 2 with the new priors
OUT="$WORK/gpu_check" DEADLINE_AT=$((START + TOTAL)) bash benchmarks/gpu_check.sh
tar -czf "$OUT/stage2.tgz" -C "$WORK" --exclude='*.png' --exclude='*.tif' --exclude='*.npy' gpu_check
echo "== all done at $(($(date +%s) - START)) s"
