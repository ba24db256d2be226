"""PVT v2's export loads into timm's PyramidVisionTransformerV2 unchanged and gives our logits.

Trains a small PVT v2 for a few steps through the CLI (dense, and ExFusion sw/dw/mb fused at
the end: the FFN's depthwise convolution stays one shared layer), builds timm's model from
model.json's kwargs, loads model.safetensors with strict names, and compares its logits on the
test images with the ones `exfusion eval` saved (max abs diff <= 1e-4, fp32 on CPU). A timm
state_dict read back through `exfusion import` gives timm's logits; a routed MoE, which cannot
hold the depthwise convolution, is refused with a message that says so."""
import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.pvt_v2 import PyramidVisionTransformerV2

from conftest import read_idx, run_cli

LOGIT_TOLERANCE = 1e-4
# 28-px images: a 7 × 7 grid (keys reduced 2 × 2 to 3 × 3), then 4 × 4.
SMALL_PVT_V2 = ["model.kind=pvt_v2", "model.img_size=28", "model.in_chans=1",
                "model.embed_dims=[16,32]", "model.num_heads=[1,2]", "model.mlp_ratios=[4,4]",
                "model.depths=[2,2]", "model.sr_ratios=[2,1]", "model.num_classes=10"]
FFN = {"dense": ["ffn.kind=dense"],
       "sw": ["ffn.kind=exfusion", "ffn.variant=sw"],
       "dw": ["ffn.kind=exfusion", "ffn.variant=dw"],
       "mb": ["ffn.kind=exfusion", "ffn.variant=mb"]}


def normalised_images(toy_idx_dir, config):
    images = torch.from_numpy(read_idx(toy_idx_dir / "t10k-images-idx3-ubyte").copy())
    mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(config["std"]).view(1, -1, 1, 1)
    return (images.unsqueeze(1).float() / 255.0 - mean) / std


@pytest.mark.parametrize("ffn", FFN)
def test_pvt_v2_export_loads_into_timm_with_our_logits(exfusion_cli, toy_idx_dir, tmp_path, ffn):
    run = tmp_path / f"run-{ffn}"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, "--threads", "1",
            "--set", *SMALL_PVT_V2, *FFN[ffn], "train.max_steps=4", "train.batch_size=16",
            "train.epochs=1")
    logits_file = tmp_path / "logits.safetensors"
    run_cli(exfusion_cli, "eval", run, "--save-logits", logits_file)
    ours = load_file(str(logits_file))
    config = json.loads((run / "model.json").read_text())
    assert config["architecture"] == "pvt_v2"
    model = PyramidVisionTransformerV2(**config["timm_kwargs"])
    state = load_file(str(run / config["weights"]))
    assert set(state) == set(model.state_dict()), "names differ from timm's"
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        theirs = model(normalised_images(toy_idx_dir, config))
    assert theirs.shape == ours["logits"].shape
    diff = (theirs - ours["logits"]).abs().max().item()
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def test_a_timm_pvt_v2_imports_with_timms_logits(exfusion_cli, toy_idx_dir, tmp_path):
    torch.manual_seed(0)
    model = PyramidVisionTransformerV2(in_chans=1, num_classes=10, depths=(2, 2),
                                       embed_dims=(16, 32), num_heads=(1, 2), sr_ratios=(2, 1),
                                       mlp_ratios=(4, 4)).eval()
    with torch.no_grad():  # nonzero biases, so that a tensor read into the wrong place shows
        for name, tensor in model.named_parameters():
            if name.endswith("bias"):
                tensor.normal_(0, 0.02)
    weights = tmp_path / "timm_pvt_v2.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    imported = tmp_path / "imported.safetensors"
    run_cli(exfusion_cli, "import", weights, "--out", imported, "--set", "model.img_size=28",
            "model.num_heads=[1,2]", "data.mean=[0.5]", "data.std=[0.25]")
    logits_file = tmp_path / "logits.safetensors"
    run_cli(exfusion_cli, "eval", imported, "--data", toy_idx_dir, "--save-logits", logits_file)
    ours = load_file(str(logits_file))
    config = json.loads(imported.with_suffix(".json").read_text())
    with torch.no_grad():
        theirs = model(normalised_images(toy_idx_dir, config))
    diff = (theirs - ours["logits"]).abs().max().item()
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def test_a_routed_moe_is_refused_naming_the_depthwise_convolution(exfusion_cli, toy_idx_dir,
                                                                  tmp_path):
    result = subprocess.run(
        [str(exfusion_cli), "train", "--data", str(toy_idx_dir), "--out", str(tmp_path / "moe"),
         "--set", *SMALL_PVT_V2, "ffn.kind=moe", "train.max_steps=1"],
        capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "depthwise convolution" in result.stderr and "exfusion" in result.stderr
    assert not (tmp_path / "moe").exists()
