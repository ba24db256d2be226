"""Image folders and CIFAR from the CLI against the reference readers: a class-folder tree of
real JPEG and PNG files (Fashion-MNIST images written by Pillow, grey, RGB and RGBA) and a
CIFAR-10 copy written with NumPy; the loader's pixels must be what Pillow / NumPy and
torchvision's transforms give, and training must run on them end to end."""
import gzip
import json
import pathlib
import subprocess

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from conftest import run_cli

FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["bag", "coat", "dress", "shirt"]


def fashion_images(count):
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        data = f.read()
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(-1, 28, 28)[:count]


def photo(grey, index):
    """A 32x32 RGB picture from a 28x28 Fashion-MNIST image: padded, each channel tinted."""
    padded = np.pad(grey, 2)
    tint = np.array([1.0, 0.6 + 0.1 * (index % 4), 0.3], dtype=np.float32)
    return (padded[..., None].astype(np.float32) * tint).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """train/ and val/ with 4 classes; JPEG (RGB and grey) and PNG (RGB, grey, RGBA) files."""
    root = tmp_path_factory.mktemp("tree")
    images = fashion_images(4 * 24 + 4 * 6)
    index = 0
    for split, per_class in (("train", 24), ("val", 6)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                rgb = photo(images[index], index)
                kind = index % 5
                path = root / split / name / f"{i:03d}"
                if kind == 0:
                    Image.fromarray(rgb).save(f"{path}.jpg", quality=90)
                elif kind == 1:
                    Image.fromarray(rgb[..., 0]).save(f"{path}.jpeg", quality=85)  # grey JPEG
                elif kind == 2:
                    Image.fromarray(rgb).save(f"{path}.png")
                elif kind == 3:
                    Image.fromarray(rgb[..., 1]).save(f"{path}.png")  # grey PNG
                else:
                    alpha = np.full(rgb.shape[:2] + (1,), 128, np.uint8)
                    Image.fromarray(np.concatenate([rgb, alpha], -1)).save(f"{path}.png")
                index += 1
    (root / "train" / "README.txt").write_text("not a class: files beside folders are ignored")
    return root


def folder_sets(root, size=32, **extra):
    # (Each --set is checked on its own: the patch size first, dividing 28 and then `size`.)
    sets = {"data.format": "folder", "data.dir": root, "model.patch_size": 4,
            "model.img_size": size, "model.in_chans": 3, "model.num_classes": 4,
            "model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2,
            "data.mean": "[0,0,0]", "data.std": "[1,1,1]", "data.workers": 2,
            "train.batch_size": 16, "train.epochs": 1}
    sets.update(extra)
    return [f"--set={k}={v}" for k, v in sets.items()]


def data_json(cli, sets, tmp_path, split="val", batches=100, name="batches"):
    out = tmp_path / f"{name}.safetensors"
    line = run_cli(cli, "data", *sets, "--split", split, "--batches", batches, "--save", out)
    return json.loads(line.strip().splitlines()[-1]), load_file(str(out))


def pillow_files(root, split):
    files = []
    for label, name in enumerate(sorted(p.name for p in (root / split).iterdir() if p.is_dir())):
        files += [(f, label) for f in sorted((root / split / name).iterdir())]
    return files


def test_folder_pixels_and_labels_equal_pillows(exfusion_cli, image_tree, tmp_path):
    summary, saved = data_json(exfusion_cli, folder_sets(image_tree), tmp_path)
    files = pillow_files(image_tree, "val")
    assert summary["samples"] == len(files) == 24
    assert saved["targets"].tolist() == [label for _, label in files]
    ours = np.rint(saved["inputs"] * 255).astype(np.int64)  # mean 0, std 1: x / 255
    for (path, _), pixels in zip(files, ours):
        reference = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64).transpose(2, 0, 1)
        difference = np.abs(pixels - reference).max()
        # PNG is lossless: exact. JPEG: both decoders are libjpeg-turbo's accurate integer
        # IDCT with fancy upsampling; Pillow's wheel bundles another libjpeg-turbo release than
        # Debian's, so one level of rounding difference is allowed there.
        assert difference <= (1 if path.suffix in (".jpg", ".jpeg") else 0), (path, difference)


@pytest.mark.parametrize("size,ratio,interpolation", [
    (24, 0.875, "bicubic"),   # timm's eval: resize to floor(24 / 0.875) = 27, centre crop 24
    (20, 1.0, "bicubic"),     # a plain downscale, 32 -> 20
    (36, 0.9, "bicubic"),     # an upscale, 32 -> 40, then the centre 36
    (16, 0.8, "bilinear"),
])
def test_evaluation_resize_and_centre_crop_equal_torchvisions(exfusion_cli, image_tree, tmp_path,
                                                              size, ratio, interpolation):
    from torchvision import transforms
    # (Patch 4 divides every size here.)
    sets = folder_sets(image_tree, size=size, **{"data.eval_crop_ratio": ratio,
                                                  "data.interpolation": interpolation})
    _, saved = data_json(exfusion_cli, sets, tmp_path)
    mode = getattr(transforms.InterpolationMode, interpolation.upper())
    reference = transforms.Compose([
        transforms.Resize(int(size / ratio), interpolation=mode),
        transforms.CenterCrop(size), transforms.PILToTensor()])
    for (path, _), pixels in zip(pillow_files(image_tree, "val"), saved["inputs"]):
        ours = np.rint(pixels * 255).astype(np.int64)
        theirs = reference(Image.open(path).convert("RGB")).numpy().astype(np.int64)
        # Pillow's fixed-point resampling is reproduced bit for bit; the JPEG decoders may
        # differ by one level before it (see above), which resampling can carry to two.
        tolerance = 2 if path.suffix in (".jpg", ".jpeg") else 0
        assert np.abs(ours - theirs).max() <= tolerance, path


def test_same_seed_same_batches_with_one_and_four_workers(exfusion_cli, image_tree, tmp_path):
    sets = folder_sets(image_tree, size=24, **{"data.preset": "deit", "train.seed": 3})
    one, a = data_json(exfusion_cli, sets + ["--set=data.workers=1"], tmp_path, "train", 3, "a")
    four, b = data_json(exfusion_cli, sets + ["--set=data.workers=4"], tmp_path, "train", 3, "b")
    assert one["workers"] == 1 and four["workers"] == 4
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])
    assert a["targets"].shape == (48, 4)  # Mixup/CutMix soft targets
    np.testing.assert_allclose(a["targets"].sum(1), 1.0, atol=1e-6)


def test_training_on_an_image_folder_saves_its_classes(exfusion_cli, image_tree, tmp_path):
    out = tmp_path / "run"
    # A later --set of a key wins over the preset's.
    run_cli(exfusion_cli, "train", "--out", out, *folder_sets(image_tree, size=24),
            "--set=data.preset=deit", "--set=data.mean=[]", "--set=data.std=[]")
    assert json.loads((out / "classes.json").read_text()) == CLASSES
    model = json.loads((out / "model.json").read_text())
    assert model["classes"] == CLASSES
    assert len(model["mean"]) == 3  # measured on the training images ([] given)
    assert model["mean"] != [0.485, 0.456, 0.406]
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["fused_test_accuracy"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["rand_augment"] == "rand-m9-mstd0.5-inc1"
    assert config["data"]["repeated_augmentation"] == 3
    # `exfusion fuse` of the run's training state finds the run's class names too.
    run_cli(exfusion_cli, "fuse", out, "--out", tmp_path / "fused.safetensors")
    assert json.loads((tmp_path / "fused.json").read_text())["classes"] == CLASSES


def test_a_truncated_image_is_named_or_skipped_and_counted(exfusion_cli, image_tree, tmp_path):
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-r", str(image_tree), str(tree)], check=True)
    victim = sorted((tree / "train" / "coat").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    sets = folder_sets(tree, size=24)
    result = subprocess.run([str(exfusion_cli), "data", *sets, "--split", "train",
                             "--batches", "100"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert str(victim) in result.stderr and "JPEG" in result.stderr, result.stderr
    summary, _ = data_json(exfusion_cli, sets + ["--set=data.skip_bad_images=true"], tmp_path,
                           "train", 100, "skipping")
    assert summary["skipped"] == 1
    assert summary["samples"] == 4 * 24 - 1  # 96 = 6 batches of 16: none dropped
    out = tmp_path / "run"
    run_cli(exfusion_cli, "train", "--out", out, *sets, "--set=data.skip_bad_images=true",
            "--set=train.log_every=1")
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    counts = [l["skipped_images"] for l in lines if l.get("event") == "train"]
    assert counts[-1] == 1 and counts == sorted(counts)


def write_cifar10(root, rng):
    """Five training batches and a test batch of CIFAR-10 records: label, 3072 planar bytes."""
    root.mkdir()
    records = {}
    for name, count in [(f"data_batch_{i}.bin", 20) for i in range(1, 6)] + [("test_batch.bin", 30)]:
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        (root / name).write_bytes(np.concatenate([labels[:, None], pixels], 1).tobytes())
        records[name] = (labels, pixels)
    return records


def read_cifar(path):
    """The NumPy reader of CIFAR's documentation: rows of 1 + 3072 bytes."""
    rows = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    return rows[:, 0].astype(np.int64), rows[:, 1:].reshape(-1, 3, 32, 32)


def test_cifar_pixels_labels_and_training(exfusion_cli, tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    write_cifar10(root, np.random.default_rng(0))
    sets = ["--set=data.format=cifar", f"--set=data.dir={root}", "--set=model.patch_size=4",
            "--set=model.img_size=32", "--set=model.in_chans=3", "--set=model.embed_dim=32",
            "--set=model.depth=2", "--set=model.num_heads=2", "--set=data.mean=[0,0,0]",
            "--set=data.std=[1,1,1]", "--set=train.batch_size=16", "--set=train.epochs=1"]
    _, saved = data_json(exfusion_cli, sets, tmp_path)
    labels, pixels = read_cifar(root / "test_batch.bin")
    assert saved["targets"].tolist() == labels.tolist()
    np.testing.assert_array_equal(np.rint(saved["inputs"] * 255).astype(np.uint8), pixels)
    out = tmp_path / "run"
    run_cli(exfusion_cli, "train", "--out", out, *sets)
    assert json.loads((out / "summary.json").read_text())["fused_test_accuracy"] >= 0.0
    # The image pipeline on CIFAR: DeiT's augmentations from the in-memory images.
    run_cli(exfusion_cli, "train", "--out", tmp_path / "deit", *sets, "--set=data.preset=deit")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                 "data_batch_5.bin", "test_batch.bin"]:
        (bad / name).write_bytes((root / name).read_bytes())
    (bad / "data_batch_3.bin").write_bytes((root / "data_batch_3.bin").read_bytes()[:-7])
    result = subprocess.run([str(exfusion_cli), "data", *sets, f"--set=data.dir={bad}"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "data_batch_3.bin" in result.stderr and "3073-byte CIFAR-10 records" in result.stderr


def test_folder_errors_name_what_is_wrong(exfusion_cli, image_tree, tmp_path):
    def refusal(*sets):
        result = subprocess.run([str(exfusion_cli), "data", *sets], capture_output=True,
                                text=True)
        assert result.returncode == 2, result.stderr
        return result.stderr
    # (Each --set is checked alone: the normalisation left to measure first, then 2 channels.)
    assert "model.in_chans = 2" in refusal(*folder_sets(image_tree), "--set=data.mean=[]",
                                           "--set=data.std=[]", "--set=model.in_chans=2")
    assert "nothing/train: no such directory" in refusal(*folder_sets(tmp_path / "nothing"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    assert "no class folders" in refusal(*folder_sets(tmp_path / "empty"))
    assert "data.rand_augment" in refusal(*folder_sets(image_tree), "--set=data.rand_augment=rand-q3")
    assert "data.crop_scale" in refusal(*folder_sets(image_tree), "--set=data.crop_scale=[0.5,0.1]")


def test_a_killed_run_on_the_image_pipeline_resumes_exactly(exfusion_cli, image_tree, tmp_path):
    """DeiT's augmentations with 3 workers: killed inside step 9 of 12 (epoch 2), resumed, the
    weights equal the uninterrupted run's bit for bit, since every draw is keyed by
    (seed, epoch, batch, position) and not by the workers' progress."""
    import os
    sets = folder_sets(image_tree, size=24, **{"data.workers": 3, "train.epochs": 2,
                                                "train.checkpoint_every": 2})
    sets += ["--set=data.preset=deit", "--set=data.mean=[0.5,0.5,0.5]",
             "--set=data.std=[0.25,0.25,0.25]"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_cli(exfusion_cli, "train", "--out", whole, *sets)
    env = dict(os.environ, EXFUSION_KILL_AT="step:9")
    result = subprocess.run([str(exfusion_cli), "train", "--out", killed, *sets], env=env,
                            capture_output=True, text=True)
    assert result.returncode == -9, result.stderr
    run_cli(exfusion_cli, "train", "--resume", killed)
    a = load_file(str(whole / "model.safetensors"))
    b = load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
