"""Pack the open-photo corpus small enough to travel to a GPU machine (a carry limit of 64 MiB).

Each training photo becomes its centre crop of at most ``--train-crop`` pixels a side, each held-out
photo its centre crop of at most ``--test-crop``; crops are written as lossless PNGs with a copy of the
corpus manifest whose width/height are the crops' (so ``scripts/train_priors.py --corpus OUT`` reads it
unchanged). No resampling: the crops keep the corpus' pixels and noise-free detail as they are.

    python scripts/pack_corpus.py --corpus data/corpus --out data/corpus_small --train-crop 384
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from common.images import read_image, write_image
from common.pixels import center_crop


def pack(corpus: Path, out: Path, *, train_crop: int, test_crop: int) -> list[dict[str, str]]:
    """Write the crops and ``out/manifest.csv``; return the manifest rows."""
    manifest = corpus / "manifest.csv"
    rows = []
    if manifest.is_file():
        with open(manifest, newline="") as handle:
            rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"error: {manifest} is missing or lists no photos; build the corpus first "
                         "(python scripts/build_corpus.py --out DIR)")
    packed = []
    for row in rows:
        crop = train_crop if row["split"] == "train" else test_crop
        pixels = center_crop(read_image(corpus / row["file"]).pixels, crop)
        write_image(out / row["file"], pixels)
        packed.append({**row, "width": str(pixels.shape[-1]), "height": str(pixels.shape[-2])})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(packed)
    return packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("data/corpus_small"))
    parser.add_argument("--train-crop", type=int, default=384, help="side of the training crops (pixels)")
    parser.add_argument("--test-crop", type=int, default=256, help="side of the held-out crops (pixels)")
    args = parser.parse_args()
    rows = pack(args.corpus, args.out, train_crop=args.train_crop, test_crop=args.test_crop)
    size = sum((args.out / row["file"]).stat().st_size for row in rows)
    print(f"wrote {len(rows)} crops, {size / 2**20:.1f} MiB, to {args.out}")


if __name__ == "__main__":
    main()
