"""Shared pytest fixtures: where the built CLI and test binary are, and small IDX datasets
written the way the Fashion-MNIST package lays them out."""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def exfusion_cli():
    cli = pathlib.Path(os.environ.get("EXFUSION_CLI", ROOT / "build" / "exfusion"))
    if not cli.exists():
        pytest.fail(f"{cli} does not exist: build the project first (scripts/build.sh)")
    return cli


@pytest.fixture(scope="session")
def tests_bin():
    """The GoogleTest binary, for tests whose C++ half runs a gtest against files we write."""
    binary = pathlib.Path(os.environ.get("EXFUSION_TESTS_BIN", ROOT / "build" / "exfusion_tests"))
    if not binary.exists():
        pytest.fail(f"{binary} does not exist: build exfusion_tests first (scripts/build.sh) "
                    "or point EXFUSION_TESTS_BIN at it")
    return binary


def write_idx(path, array):
    """Raw uint8 IDX file: magic 0x0000 08 <ndim>, big-endian dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def read_idx(path):
    data = path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


@pytest.fixture
def toy_idx_dir(tmp_path):
    """Random 28x28 images with labels in 0..9, train and test splits."""
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 96), ("t10k", 40)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, size=(count, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=count))
    return tmp_path


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory):
    """Made-up words in sentences, one JSON record each over three shards: enough for a
    tokenizer of a few hundred pieces and a few thousand span-corruption samples."""
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(400)]
    root = tmp_path_factory.mktemp("corpus")
    for shard in range(3):
        lines = []
        for _ in range(300):
            sentence = " ".join(rng.choice(words, size=rng.integers(5, 30)))
            lines.append(json.dumps({"text": sentence.capitalize() + ".", "id": shard}))
        (root / f"shard-{shard}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def run_cli(cli, *args):
    result = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def our_logits(cli, checkpoint, tmp_path, *eval_options):
    """The logits `exfusion eval --save-logits` writes for a checkpoint's validation samples,
    with the inputs they were computed on (safetensors, loaded as a dict of tensors);
    eval_options go to eval (--unfused for a training state)."""
    from safetensors.torch import load_file
    saved = tmp_path / "logits.safetensors"
    run_cli(cli, "eval", checkpoint, "--save-logits", saved, "--force", *eval_options)
    return load_file(str(saved))

