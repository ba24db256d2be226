"""Writes an ImageNet-style tree of JPEG files (train/<class>/<n>.jpg, val/...) for the data
loader benchmark: Fashion-MNIST images scaled up to the requested size, tinted per class, with
noise so that the files carry the entropy of a photograph rather than flat areas."""
import argparse
import gzip
import pathlib

import numpy as np
from PIL import Image


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=pathlib.Path)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fashion", type=pathlib.Path,
                        default=pathlib.Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()
    stamp = args.root / f".complete-{args.classes}-{args.per_class}-{args.size}"
    if stamp.exists():
        return
    with gzip.open(args.fashion / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    rng = np.random.default_rng(0)
    index = 0
    for split, count in (("train", args.per_class), ("val", max(1, args.per_class // 4))):
        for label in range(args.classes):
            folder = args.root / split / f"class{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            tint = rng.uniform(0.3, 1.0, 3)
            for i in range(count):
                grey = Image.fromarray(images[index % len(images)]).resize(
                    (args.size, args.size), Image.BICUBIC)
                rgb = np.asarray(grey, dtype=np.float32)[..., None] * tint
                rgb += rng.normal(0, 12, rgb.shape) + 40 * tint
                Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(
                    folder / f"{i:05d}.jpg", quality=90)
                index += 1
    stamp.touch()


if __name__ == "__main__":
    main()
