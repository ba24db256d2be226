"""Swin's export loads into timm's SwinTransformer unchanged and gives our logits.

Trains a small Swin for a few steps through the CLI (dense, and ExFusion sw/dw/mb fused at the
end), builds timm's SwinTransformer from model.json's kwargs, loads model.safetensors with
strict names, and compares its logits on the test images with the ones `exfusion eval` saved
(max abs diff <= 1e-4, fp32 on CPU). The small Swin has a shifted stage (a 14 × 14 grid in
windows of 7, so its mask matters) and an unshifted single-window stage after a patch merging.
A timm state_dict read back through `exfusion import` gives timm's logits too."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.swin_transformer import SwinTransformer

from conftest import read_idx, run_cli

LOGIT_TOLERANCE = 1e-4
SMALL_SWIN = ["model.kind=swin", "model.img_size=28", "model.in_chans=1", "model.patch_size=2",
              "model.embed_dim=16", "model.depths=[2,2]", "model.num_heads=[2,4]",
              "model.window_size=7", "model.num_classes=10"]
FFN = {"dense": ["ffn.kind=dense"],
       "sw": ["ffn.kind=exfusion", "ffn.variant=sw"],
       "dw": ["ffn.kind=exfusion", "ffn.variant=dw"],
       "mb": ["ffn.kind=exfusion", "ffn.variant=mb"]}


def normalised_test_images(toy_idx_dir, config):
    images = torch.from_numpy(read_idx(toy_idx_dir / "t10k-images-idx3-ubyte").copy())
    mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(config["std"]).view(1, -1, 1, 1)
    return (images.unsqueeze(1).float() / 255.0 - mean) / std


def timm_swin(run):
    config = json.loads((run / "model.json").read_text())
    assert config["architecture"] == "swin"
    model = SwinTransformer(**config["timm_kwargs"])
    state = load_file(str(run / config["weights"]))
    assert set(state) == set(model.state_dict()), "names differ from timm's"
    model.load_state_dict(state, strict=True)
    return model.eval(), config


@pytest.mark.parametrize("ffn", FFN)
def test_swin_export_loads_into_timm_with_our_logits(exfusion_cli, toy_idx_dir, tmp_path, ffn):
    run = tmp_path / f"run-{ffn}"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, "--threads", "1",
            "--set", *SMALL_SWIN, *FFN[ffn], "train.max_steps=4", "train.batch_size=16",
            "train.epochs=1")
    logits_file = tmp_path / "logits.safetensors"
    run_cli(exfusion_cli, "eval", run, "--save-logits", logits_file)
    ours = load_file(str(logits_file))
    model, config = timm_swin(run)
    with torch.no_grad():
        theirs = model(normalised_test_images(toy_idx_dir, config))
    assert theirs.shape == ours["logits"].shape
    diff = (theirs - ours["logits"]).abs().max().item()
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def test_a_timm_swin_imports_with_timms_logits(exfusion_cli, toy_idx_dir, tmp_path):
    torch.manual_seed(0)
    model = SwinTransformer(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=16,
                            depths=(2, 2), num_heads=(2, 4), window_size=7).eval()
    # Nonzero biases and a nonzero table, so that a tensor read into the wrong place shows.
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.endswith("bias") or "relative_position_bias_table" in name:
                tensor.normal_(0, 0.02)
    weights = tmp_path / "timm_swin.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    imported = tmp_path / "imported.safetensors"
    run_cli(exfusion_cli, "import", weights, "--out", imported, "--set", "model.img_size=28",
            "data.mean=[0.5]", "data.std=[0.25]")
    logits_file = tmp_path / "logits.safetensors"
    run_cli(exfusion_cli, "eval", imported, "--data", toy_idx_dir, "--save-logits", logits_file)
    ours = load_file(str(logits_file))
    config = json.loads(imported.with_suffix(".json").read_text())
    assert config["architecture"] == "swin"
    with torch.no_grad():
        theirs = model(normalised_test_images(toy_idx_dir, config))
    diff = (theirs - ours["logits"]).abs().max().item()
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"
