#!/usr/bin/env bash
# One GPU session's checks for stage 2, in priority order, each under its own time limit and all under
# one deadline (DEADLINE_AT, seconds since the epoch; default: 9 minutes from now); everything printed is
# also saved under $OUT (default runs/gpu_check). Needs the dev set copied into data/dev (ignored by git;
# carry it) and nothing else: it runs from the source tree, with the priors in checkpoints/.
#
#   mkdir -p data/dev && cp ../shared/data/dev/*.png data/dev/
#   PYTHONPATH=. bash benchmarks/gpu_check.sh [CHECK...]   # on the GPU machine (device run, carry data/dev)
#   PYTHONPATH=. SMOKE=1 bash benchmarks/gpu_check.sh       # on a CPU: tiny sizes, checks that every step runs
# CHECKs (default: all, in this order):
#   devset_fast devset speed_bf16 graphs memory syncs speed_fp32 batched batched_graphs batched_fp32 ranks tile_profile
#   big_fast channels_last
set -u
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-.}
DEADLINE_AT=${DEADLINE_AT:-$(($(date +%s) + 540))}
if [ "${SMOKE:-0}" = 1 ]; then
  SIZES="64"; SIZE=64; STEPS=1; BATCH=2; HALF=32-true; DEV_ARGS="--limit 2 --crop 64 --steps 2"; BIG=160; TILE=64
  BIG_ARGS="--steps 2"; SIDD=2; LIMIT=600; DEVICE=cpu; MEMORY_B="1 2"; RANK_ARGS=""
else
  SIZES="64 128 256 512"; SIZE=256; STEPS=10; BATCH=16; HALF=bf16-mixed; DEV_ARGS=""; BIG=""; BIG_ARGS=""; TILE=1008
  SIDD=${SIDD:-8}; LIMIT=60; DEVICE=auto; MEMORY_B="1 8 32"; RANK_ARGS="--limit 4"
fi
CHECKS=" ${*:-devset_fast devset speed_bf16 graphs memory syncs speed_fp32 batched batched_graphs batched_fp32 ranks tile_profile big_fast channels_last} "
step() {  # step NAME SECONDS COMMAND...: run one check (cut to the deadline), output to the console and $OUT/NAME.txt
  local name=$1 limit=$2 left; shift 2
  [[ $CHECKS == *" $name "* ]] || return 0
  left=$((DEADLINE_AT - $(date +%s)))
  if ((left < 20)); then echo "== $name: skipped, ${left} s left before the deadline" | tee "$OUT/$name.txt"; return 0; fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit} s): $*" | tee "$OUT/$name.txt"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v "^\s*$" | tail -n 40 | tee -a "$OUT/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s wall" | tee -a "$OUT/$name.txt"
}
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee "$OUT/device.txt"
# 1. dev-set quality first (still unmeasured after the 2026-11-27 session): the fast preset on all pairs,
#    the default configuration on the first $SIDD SIDD pairs (one batch)
step devset_fast $LIMIT python -m dvi evaluate --noisy data/dev --clean data/dev --output "$OUT/devset_fast" \
  --preset fast --device $DEVICE --log-every 50 $DEV_ARGS
for noisy in $(ls "$PWD"/data/dev/sidd_*_noisy.png | head -n "$SIDD"); do echo "$noisy ${noisy/_noisy/_clean}"; done > "$OUT/sidd.txt"
step devset $((LIMIT * 3)) python -m dvi evaluate --list "$OUT/sidd.txt" --output "$OUT/devset" \
  --device $DEVICE --log-every 50 $DEV_ARGS
# 2. step time by size, bf16 (the default on a GPU) and fp32 (the unaccelerated baseline)
step speed_bf16 $LIMIT python -m benchmarks.dvi_speed --sizes $SIZES --steps $STEPS --precision $HALF
# the whole step as one CUDA graph against the eager step, reference configuration (issue 13 item 1; the graph's
# warm-up steps and capture are not timed), then the memory model against the measured peak at B = 1, 8, 32
# (dvi/fitting/memory.py: bf16 priors at 2 bytes per value, unverified until this runs)
step graphs $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision $HALF \
  --compare cuda_graphs=false cuda_graphs=true
step memory $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --precision $HALF --memory $MEMORY_B
# where the step loop makes the host wait for the GPU (CUDA sync debug mode over a short real fit)
step syncs $LIMIT python -m benchmarks.step_syncs --size $SIZE --steps $((STEPS * 3 + 4)) --log-every 10
step speed_fp32 $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision 32-true
# 3. many images at once: images/s and TFLOP/s
step batched $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision $HALF --batch $BATCH
step batched_graphs $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision $HALF --batch $BATCH \
  --compare cuda_graphs=false cuda_graphs=true
step batched_fp32 $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision 32-true --batch $BATCH
# evaluate sharded over 2 ranks (torchrun, both on this one card): per-rank shares, and the rows of devset_fast
ranks_check() {
  python -m torch.distributed.run --standalone --nproc_per_node 2 -m dvi evaluate --noisy data/dev --clean data/dev \
    --output "$OUT/ranks" --preset fast --device $DEVICE --log-every 50 $DEV_ARGS $RANK_ARGS 2>&1 | grep -v "^\s*$" || return 1
  python - "$OUT/ranks/results.csv" "$OUT/devset_fast/results.csv" <<'PY'
import csv, sys
rows = [{r["name"]: r for r in csv.DictReader(open(path, newline=""))} for path in sys.argv[1:]]
ranked, single = rows
print(f"{len(ranked)} rows from 2 ranks; compared with the 1-process devset_fast rows")
for name, row in sorted(ranked.items()):
    other = single.get(name)
    gap = abs(float(row["psnr"]) - float(other["psnr"])) if other else float("nan")
    print(f"  {name}: {row['psnr']} dB (1 process: {other['psnr'] if other else 'missing'}; |diff| {gap:.3f})")
PY
}
export OUT DEVICE DEV_ARGS RANK_ARGS; export -f ranks_check  # timeout runs it in a child bash
step ranks $LIMIT bash -c ranks_check
# 4. one tile of the big photo's size with the fast preset, outside Lightning: its step time, and a profile of
#    where it goes (a tile took ~19 s inside the tiled fit on 2026-11-27, about 5x its arithmetic)
step tile_profile $LIMIT python -m benchmarks.dvi_speed --sizes $TILE --preset fast --steps $STEPS --precision $HALF \
  --profile 3
# 5. a 4000x3000 photo (or BIG x BIG in smoke mode) with the fast preset, tiled from a 16 GB budget
SIDE_H=${BIG:-3000}; SIDE_W=${BIG:-4000}
if [[ $CHECKS == *" big_fast "* ]]; then
python - "$OUT/big_noisy.png" "$OUT/big_clean.png" "$SIDE_H" "$SIDE_W" <<'PY'
import sys
import torch
from common.images import write_image
h, w = int(sys.argv[3]), int(sys.argv[4])
axis_y, axis_x = torch.linspace(0, 6, h)[:, None], torch.linspace(0, 8, w)[None, :]
clean = 0.5 + 0.3 * torch.stack([torch.sin(axis_x + c) * torch.cos(axis_y - c) for c in range(3)])
write_image(sys.argv[2], clean)
write_image(sys.argv[1], (clean + 15 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1))
PY
fi
step big_fast $((LIMIT * 3)) python -m dvi denoise --image "$OUT/big_noisy.png" --clean "$OUT/big_clean.png" \
  --output "$OUT/big_denoised.png" --preset fast --max-memory 16 --device $DEVICE --log-every 50 $BIG_ARGS
# 6. what channels_last buys, alternating in one process
step channels_last $LIMIT python -m benchmarks.dvi_speed --sizes $SIZE --steps $STEPS --precision $HALF \
  --compare channels_last=false channels_last=true
echo "results in $OUT"
