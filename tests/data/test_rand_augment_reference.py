"""Our RandAugment ops (src/data/rand_augment.cpp) against timm's own op functions on Pillow.

RandAugmentOps.WriteReferenceOutputs (tests/data/test_rand_augment.cpp) runs its list of
(op, level, interpolation) cases on the image written here and saves each output; every one is
compared with timm.data.auto_augment.NAME_TO_OP[op] applied to the same PIL image: RGB, L
(greyscale), and a square RGB one (where Rotate 90 is Pillow's transpose)."""
import os
import platform
import subprocess

import numpy as np
import pytest
from PIL import Image
from timm.data import auto_augment

FILL = (124, 116, 104)  # timm's img_mean for ImageNet's mean

# Tolerances. Our ops repeat Pillow's arithmetic: integer tables for the point ops, the float32
# ImagingBlend for the enhance ops, and Geometry.c's double-precision inverse mapping and filters
# for the affine ops, each float operation rounded on its own. Pillow's x86-64 wheels are built
# without FMA, so they round the same way and every case must match byte for byte there.
# Elsewhere (GCC fuses a * b + c into one FMA, rounded once, by default where the CPU has it,
# as on aarch64) Pillow's blend, filter and mapping can land across a truncation, by 1, and only
# where the exact value sits on that boundary: the enhance and affine ops then get 1 on at
# most 0.5% of the values (a wrong formula, say a luma rounded differently, moves far more).
# The point ops are integer (or Python float) arithmetic on both sides: exact everywhere.
PILLOW_ROUNDS_EACH_OPERATION = platform.machine() in ("x86_64", "AMD64")
POINT_OPS = {"AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing",
             "SolarizeAdd"}
ENHANCE_OPS = {"ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
               "SharpnessIncreasing"}
AFFINE_OPS = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
MAX_DIFFERENCE = 0 if PILLOW_ROUNDS_EACH_OPERATION else 1
MAX_DIFFERING_FRACTION = 0 if PILLOW_ROUNDS_EACH_OPERATION else 0.005
INTEGER_LEVEL_OPS = {"PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd"}
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def photo_like_image(mode, height, width):
    """A picture with what photos have: smooth shading, edges, texture and noise. The range
    stays inside 0..255 (at most 10..235) so AutoContrast and Equalize have work to do."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    shading = 0.5 + 0.3 * np.sin(x / 9.0) * np.cos(y / 7.0)
    disc = ((x - 35) ** 2 + (y - 17) ** 2 < 11 ** 2).astype(np.float64)
    stripes = 0.15 * (np.floor(x / 4) % 2)
    channels = [shading + 0.3 * disc * tint + stripes for tint in (1.0, -0.5, 0.2)]
    rgb = np.stack(channels, axis=-1) * 200 + 20 + rng.normal(0, 8, (height, width, 3))
    image = Image.fromarray(np.clip(rgb, 10, 235).astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert("L")


def run_reference_cases(binary, image, out_dir):
    """Our outputs for every case, as [(name, level, interpolation, HWC array)]."""
    pixels = np.asarray(image)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    (out_dir / "input.raw").write_bytes(pixels.tobytes())
    height, width = pixels.shape[:2]
    (out_dir / "input.txt").write_text(f"{height} {width} {channels} {' '.join(map(str, FILL))}\n")
    result = subprocess.run(
        [str(binary), "--gtest_filter=RandAugmentOps.WriteReferenceOutputs"],
        env={**os.environ, "EXFUSION_RAND_AUGMENT_OUT": str(out_dir)},
        capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A filter that matches nothing also exits 0: make sure the test really ran.
    assert "[  PASSED  ] 1 test." in output, output
    cases = []
    for line in (out_dir / "cases.txt").read_text().splitlines():
        index, name, level, interpolation = line.split()
        ours = np.frombuffer((out_dir / f"output_{index}.raw").read_bytes(), dtype=np.uint8)
        cases.append((name, float(level), interpolation, ours.reshape(pixels.shape)))
    return cases


def timm_reference(image, name, level, interpolation):
    """timm's op on the PIL image. Two places where it cannot be called as is: a grey image
    needs an int fill (Pillow refuses a 3-tuple for L: timm would raise), and Pillow 13's
    posterize raises for 0 bits (timm's PosterizeIncreasing at magnitude 10), where we clear
    every bit as Pillow before 11 did and TensorFlow does."""
    if name == "PosterizeIncreasing" and int(level) == 0:
        return np.zeros_like(np.asarray(image))
    fill = FILL if image.mode == "RGB" else FILL[0]
    op = auto_augment.NAME_TO_OP[name]
    kwargs = dict(fillcolor=fill, resample=RESAMPLE[interpolation])
    if name in ("AutoContrast", "Equalize", "Invert"):
        return np.asarray(op(image, **kwargs))
    argument = int(level) if name in INTEGER_LEVEL_OPS else level
    return np.asarray(op(image, argument, **kwargs))


# 40x56 in both modes; a square one too, where Rotate 90 takes Pillow's exact transpose.
@pytest.mark.parametrize("mode, height, width", [("RGB", 40, 56), ("L", 40, 56), ("RGB", 36, 36)])
def test_ops_match_timm_on_pillow(tests_bin, tmp_path, mode, height, width):
    image = photo_like_image(mode, height, width)
    cases = run_reference_cases(tests_bin, image, tmp_path)
    names = {name for name, *_ in cases}
    assert names == POINT_OPS | ENHANCE_OPS | AFFINE_OPS, "the C++ cases must cover every op"
    failures = []
    for name, level, interpolation, ours in cases:
        expected = timm_reference(image, name, level, interpolation)
        assert expected.shape == ours.shape, (name, level)
        difference = np.abs(expected.astype(np.int16) - ours.astype(np.int16))
        largest = difference.max()
        differing = np.count_nonzero(difference) / difference.size
        if name in POINT_OPS:
            ok = largest == 0
        else:
            ok = largest <= MAX_DIFFERENCE and differing <= MAX_DIFFERING_FRACTION
        if not ok:
            failures.append(f"{name}({level}, {interpolation}): {differing:.2%} of the values "
                            f"differ, by up to {largest}")
    assert not failures, "\n".join(failures)


def test_level_functions_reach_the_case_levels():
    """The cases' levels are ones timm's rand-m9-mstd0.5-inc1 produces: e.g. m = 9 gives
    Rotate 27, enhance 1.81 and 0.19, shear 0.27, translate 0.405, SolarizeAdd 99."""
    hparams = dict(auto_augment._HPARAMS_DEFAULT)
    level = auto_augment.LEVEL_TO_ARG
    assert abs(abs(level["Rotate"](9, hparams)[0]) - 27.0) < 1e-12
    assert {round(level["ColorIncreasing"](9, hparams)[0], 12) for _ in range(64)} == {1.81, 0.19}
    assert abs(abs(level["ShearX"](9, hparams)[0]) - 0.27) < 1e-12
    assert abs(abs(level["TranslateXRel"](9, hparams)[0]) - 0.405) < 1e-12
    assert level["SolarizeAdd"](9, hparams)[0] == 99
    assert level["SolarizeIncreasing"](9, hparams)[0] == 26
    assert level["PosterizeIncreasing"](10, hparams)[0] == 0
