#!/usr/bin/env bash
# One GPU session's checks for stage 2, in priority order, each under its own time limit; everything
# printed is also saved under $OUT (default runs/gpu_check). Needs the dev set copied into data/dev
# (ignored by git; carry it) and nothing else: it runs from the source tree.
#
#   mkdir -p data/dev && cp ../shared/data/dev/*.png data/dev/
#   PYTHONPATH=. bash benchmarks/gpu_check.sh [CHECK...]   # on the GPU machine (device run, carry data/dev)
#   PYTHONPATH=. SMOKE=1 bash benchmarks/gpu_check.sh       # on a CPU: tiny sizes, checks that every step runs
# CHECKs (default: all, about 9 minutes on an H100 at most): speed_bf16 speed_fp32 channels_last batched devset big_fast
set -u
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-.}
if [ "${SMOKE:-0}" = 1 ]; then
  SIZES="64"; SIZE=64; STEPS=1; BATCH=2; HALF=32-true; DEV_ARGS="--limit 2 --crop 64 --steps 2"; BIG=160; BIG_ARGS="--steps 2"
  LIMIT=600; DEVICE=cpu
else
  SIZES="64 128 256 512"; SIZE=256; STEPS=10; BATCH=16; HALF=bf16-mixed; DEV_ARGS=""; BIG=""; BIG_ARGS=""; LIMIT=75; DEVICE=auto
fi
CHECKS=" ${*:-speed_bf16 speed_fp32 channels_last batched devset big_fast} "
step() {  # step NAME SECONDS COMMAND...: run one check, output to the console and $OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  [[ $CHECKS == *" $name "* ]] || return 0
  echo "== $name: $*" | tee "$OUT/$name.txt"
  timeout "$limit" "$@" 2>&1 | grep -v "^\s*$" | tail -n 40 | tee -a "$OUT/$name.txt"
}
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee "$OUT/device.txt"
# 1. step time by size, bf16 (the default on a GPU) and fp32 (the unaccelerated baseline); CPUs have no fast bf16
step speed_bf16 $LIMIT python -m benchmarks.dvi_speed --sizes $SIZES --steps $STEPS --precision $HALF
step speed_fp32 $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision 32-true
# 2. what channels_last buys, alternating in one process
step channels_last $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision $HALF \
  --compare channels_last=false channels_last=true
# 3. many images at once: images/s and TFLOP/s
step batched $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision $HALF --batch $BATCH
# 4. dev-set quality with the default configuration, all same-sized images fitted together
step devset $((LIMIT * 2)) python -m dvi evaluate --noisy data/dev --clean data/dev --output "$OUT/devset" \
  --device $DEVICE --log-every 50 $DEV_ARGS
# 5. a 4000x3000 photo (or BIG x BIG in smoke mode) with the fast preset, tiled from the memory budget
SIDE_H=${BIG:-3000}; SIDE_W=${BIG:-4000}
python - "$OUT/big_noisy.png" "$SIDE_H" "$SIDE_W" <<'EOF'
import sys
import torch
from common.images import write_image
h, w = int(sys.argv[2]), int(sys.argv[3])
axis_y, axis_x = torch.linspace(0, 6, h)[:, None], torch.linspace(0, 8, w)[None, :]
clean = 0.5 + 0.3 * torch.stack([torch.sin(axis_x + c) * torch.cos(axis_y - c) for c in range(3)])
write_image(sys.argv[1], (clean + 15 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1))
EOF
step big_fast $((LIMIT * 2)) python -m dvi denoise --image "$OUT/big_noisy.png" --output "$OUT/big_denoised.png" \
  --preset fast --max-memory 16 --device $DEVICE --log-every 50 $BIG_ARGS
echo "results in $OUT"
