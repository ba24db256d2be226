"""The data loader benchmark's peer: what a PyTorch user gets for the same tree and recipe,
torchvision's ImageFolder with timm's DeiT training transform (create_transform with
RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, bicubic) in a DataLoader, and timm's
Mixup/CutMix on each batch as DeiT's training loop applies it. Prints one JSON line, timed like
`exfusion data`: from creating the iterator to the last batch read."""
import argparse
import json
import time

import torch
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from torchvision.datasets import ImageFolder

# timm 1.0.31's PosterizeIncreasing asks for 0 bits at magnitude 10, which Pillow 13 refuses
# (ValueError) where older Pillow returned a black image; the peer gets the old behaviour, as
# our RandAugment has it, instead of a crash in about 2 % of its ops.
_posterize = ImageOps.posterize


def _posterize_zero_bits_black(image, bits):
    return Image.new(image.mode, image.size) if bits < 1 else _posterize(image, bits)


ImageOps.posterize = _posterize_zero_bits_black


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    transform = create_transform(args.size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1",
                                 interpolation="bicubic", re_prob=0.25, re_mode="pixel",
                                 re_count=1)
    dataset = ImageFolder(f"{args.root}/train", transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, drop_last=True)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, label_smoothing=0.1,
                  num_classes=len(dataset.classes))
    start = time.perf_counter()
    samples = batches = 0
    for images, targets in loader:
        images, targets = mixup(images, targets)
        samples += images.shape[0]
        batches += 1
        if batches == args.batches:
            break
    seconds = time.perf_counter() - start
    print(json.dumps({"peer": "torchvision ImageFolder + timm create_transform + Mixup",
                      "workers": args.workers, "batch_size": args.batch_size, "batches": batches,
                      "samples": samples, "seconds": seconds, "images_per_s": samples / seconds,
                      "images_per_s_per_worker": samples / seconds / args.workers}))


if __name__ == "__main__":
    main()
