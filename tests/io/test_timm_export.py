"""The fused export loads into timm's VisionTransformer unchanged and gives our logits.

Trains a small ExFusion model (each variant) or EWA model for a few steps through the CLI, then builds
timm's VisionTransformer from model.json's kwargs, loads model.safetensors with strict
names, and compares its logits on the test images with the ones `exfusion eval` saved
(max abs diff <= 1e-4, fp32 on CPU)."""
import json

import pytest
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

from conftest import read_idx, run_cli

LOGIT_TOLERANCE = 1e-4


KINDS = {"sw": ["--variant", "sw"], "dw": ["--variant", "dw"], "mb": ["--variant", "mb"],
         "ewa": ["--ffn", "ewa"]}


@pytest.mark.parametrize("variant", KINDS)
def test_fused_export_matches_timm(exfusion_cli, toy_idx_dir, tmp_path, variant):
    run = tmp_path / f"run-{variant}"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, *KINDS[variant],
            "--threads", "1", "--set", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
            "train.max_steps=6", "train.batch_size=16", "train.epochs=1")
    logits_file = tmp_path / "logits.safetensors"
    run_cli(exfusion_cli, "eval", run, "--save-logits", logits_file)
    ours = load_file(str(logits_file))

    config = json.loads((run / "model.json").read_text())
    model = VisionTransformer(**config["timm_kwargs"])
    state = load_file(str(run / config["weights"]))
    assert set(state) == set(model.state_dict()), "names differ from timm's"
    model.load_state_dict(state, strict=True)
    model.eval()

    images = torch.from_numpy(read_idx(toy_idx_dir / "t10k-images-idx3-ubyte").copy())
    mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(config["std"]).view(1, -1, 1, 1)
    x = (images.unsqueeze(1).float() / 255.0 - mean) / std
    with torch.no_grad():
        theirs = model(x)
    labels = torch.from_numpy(read_idx(toy_idx_dir / "t10k-labels-idx1-ubyte").astype("int64"))
    assert torch.equal(ours["labels"], labels)
    assert theirs.shape == ours["logits"].shape
    diff = (theirs - ours["logits"]).abs().max().item()
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def test_export_metadata_describes_the_model(exfusion_cli, toy_idx_dir, tmp_path):
    run = tmp_path / "run"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, "--threads", "1",
            "--set", "model.embed_dim=16", "model.depth=1", "model.num_heads=2",
            "train.max_steps=2", "train.batch_size=16", "train.epochs=1")
    from safetensors import safe_open
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["exfusion.config"])
    assert config["ffn"]["kind"] == "dense"
    assert config["model"]["embed_dim"] == 16
    assert metadata["format"] == "pt"
    with safe_open(str(run / "state.safetensors"), "pt") as f:
        names = set(f.keys())
        state_config = json.loads(f.metadata()["exfusion.config"])
    assert state_config["ffn"]["kind"] == "exfusion"
    assert "model.blocks.0.mlp.fc1.weight" in names
    assert "model.blocks.0.mlp.fusion.bank" in names
    assert "optimizer.blocks.0.mlp.fc1.weight.exp_avg" in names
