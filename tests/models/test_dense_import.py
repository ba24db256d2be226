"""`exfusion import` turns timm's and Hugging Face's ViTs into our dense checkpoint, whose logits
are the library's own.

Builds a tiny timm VisionTransformer and a tiny Hugging Face ViTForImageClassification (28 px,
1 channel, patch 7, width 32, depth 2, 2 heads, 10 classes) with every parameter random, saves
each with safetensors, imports it through the CLI and compares `exfusion eval --save-logits` with
the library's logits on the same normalised test images (max abs diff <= 1e-4, fp32 on CPU)."""
import json
from functools import partial

import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from transformers import ViTConfig, ViTForImageClassification

from conftest import read_idx, run_cli

LOGIT_TOLERANCE = 1e-4
SIZES = dict(img_size=28, in_chans=1, patch_size=7, embed_dim=32, depth=2, num_heads=2,
             num_classes=10)
NORMALISATION = ("data.mean=[0.5]", "data.std=[0.25]")


def randomise(model, seed):
    """LayerNorm scales 1 + N(0, 0.1), every other parameter N(0, 0.1): the libraries start
    norms at 1/0 and biases at 0, where a swapped or misplaced tensor would not show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = 0.1 * torch.randn(parameter.shape, generator=generator)
            is_norm_scale = "norm" in name and name.endswith("weight") and parameter.ndim == 1
            parameter.copy_(1.0 + noise if is_norm_scale else noise)
    return model.eval()


def import_and_evaluate(cli, source, toy_idx_dir, tmp_path, *options):
    """Imports `source`, evaluates the result; its description, our logits, the images."""
    dest = tmp_path / "imported.safetensors"
    run_cli(cli, "import", source, "--out", dest, *options)
    logits = tmp_path / "logits.safetensors"
    run_cli(cli, "eval", dest, "--data", toy_idx_dir, "--save-logits", logits)
    description = json.loads(dest.with_suffix(".json").read_text())
    images = torch.from_numpy(read_idx(toy_idx_dir / "t10k-images-idx3-ubyte").copy())
    mean = torch.tensor(description["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(description["std"]).view(1, -1, 1, 1)
    x = (images.unsqueeze(1).float() / 255.0 - mean) / std
    return dest, description, load_file(str(logits))["logits"], x


def max_diff(a, b):
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def test_timm_import_gives_timms_logits(exfusion_cli, toy_idx_dir, tmp_path):
    model = randomise(VisionTransformer(**SIZES), seed=1)
    source = tmp_path / "timm.safetensors"
    save_file(model.state_dict(), str(source))
    dest, description, ours, x = import_and_evaluate(
        exfusion_cli, source, toy_idx_dir, tmp_path, "--set", "model.num_heads=2", *NORMALISATION)
    kwargs = description["timm_kwargs"]
    assert {key: kwargs[key] for key in SIZES} == SIZES
    assert kwargs["mlp_ratio"] == 4.0
    assert description["norm_eps"] == 1e-6
    with torch.no_grad():
        theirs = model(x)
    diff = max_diff(theirs, ours)
    print(f"timm import: max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"
    # The written file is timm's state_dict again.
    written = load_file(str(dest))
    assert set(written) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(written[name], tensor), name


def test_hugging_face_import_gives_transformers_logits(exfusion_cli, toy_idx_dir, tmp_path):
    config = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                       num_labels=10)
    model = randomise(ViTForImageClassification(config), seed=2)
    source = tmp_path / "hf"
    model.save_pretrained(source)  # model.safetensors (transformers 5 writes only safetensors)
    assert (source / "model.safetensors").exists() and (source / "config.json").exists()
    dest, description, ours, x = import_and_evaluate(
        exfusion_cli, source, toy_idx_dir, tmp_path, "--set", *NORMALISATION)
    assert description["norm_eps"] == 1e-12
    assert description["timm_kwargs"]["num_heads"] == 2
    with torch.no_grad():
        theirs = model(pixel_values=x).logits
    diff = max_diff(theirs, ours)
    print(f"Hugging Face import: max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"

    # The import loads into timm too, with its LayerNorms at the description's eps.
    timm_model = VisionTransformer(
        **description["timm_kwargs"],
        norm_layer=partial(torch.nn.LayerNorm, eps=description["norm_eps"]))
    timm_model.load_state_dict(load_file(str(dest)), strict=True)
    with torch.no_grad():
        via_timm = timm_model.eval()(x)
    diff_timm = max_diff(theirs, via_timm)
    print(f"Hugging Face import through timm: max abs logit difference {diff_timm:.3e}")
    assert diff_timm <= LOGIT_TOLERANCE, f"max abs logit difference {diff_timm}"

    info = json.loads(run_cli(exfusion_cli, "info", "--json", dest))
    assert info["params"] == sum(p.numel() for p in model.parameters())


def evaluate(cli, checkpoint, toy_idx_dir, tmp_path):
    """Our logits for `checkpoint` on the test images, and those images normalised as
    NORMALISATION says."""
    logits = tmp_path / "logits.safetensors"
    run_cli(cli, "eval", checkpoint, "--data", toy_idx_dir, "--save-logits", logits, "--force")
    images = torch.from_numpy(read_idx(toy_idx_dir / "t10k-images-idx3-ubyte").copy())
    x = (images.unsqueeze(1).float() / 255.0 - 0.5) / 0.25
    return load_file(str(logits))["logits"], x


def test_timm_and_hugging_face_files_upcycle_directly(exfusion_cli, toy_idx_dir, tmp_path):
    """`exfusion upcycle` and `init.from` read timm and Hugging Face files without an import
    first; copies of the dense FFN (a MoE without dropping, ExFusion-sw over DeRS experts)
    give the library's logits (LOGIT_TOLERANCE)."""
    timm_model = randomise(VisionTransformer(**SIZES), seed=3)
    timm_file = tmp_path / "timm.safetensors"
    save_file(timm_model.state_dict(), str(timm_file))
    moe = tmp_path / "moe-init"
    summary = json.loads(run_cli(
        exfusion_cli, "upcycle", timm_file, "--to", "moe", "--out", moe, "--set",
        "model.num_heads=2", *NORMALISATION, "ffn.num_experts=3", "ffn.capacity_factor=0"))
    assert summary["layers"] == SIZES["depth"]
    ours, x = evaluate(exfusion_cli, moe / "init.safetensors", toy_idx_dir, tmp_path)
    with torch.no_grad():
        diff = max_diff(timm_model(x), ours)
    print(f"timm file upcycled into MoE-3-2: max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE

    config = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                       num_labels=10)
    hf_model = randomise(ViTForImageClassification(config), seed=4)
    hf_dir = tmp_path / "hf"
    hf_model.save_pretrained(hf_dir)
    ders = tmp_path / "ders-init"
    run_cli(exfusion_cli, "upcycle", hf_dir, "--to", "ders-exfusion", "--out", ders, "--set",
            *NORMALISATION, "ffn.variant=sw", "ffn.num_experts=2")
    info = json.loads(run_cli(exfusion_cli, "info", "--json", ders / "init.safetensors"))
    assert info["kind"] == "upcycled-model"
    ours, x = evaluate(exfusion_cli, ders / "init.safetensors", toy_idx_dir, tmp_path)
    with torch.no_grad():
        diff = max_diff(hf_model(pixel_values=x).logits, ours)
    print(f"Hugging Face dir upcycled into DeRS-ExFusion-sw: max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE

    # One command: a run whose init.from is the timm file, its model section the file's.
    run = tmp_path / "run"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, "--threads", "1",
            "--set", "model.img_size=28", "model.patch_size=7", "model.embed_dim=32",
            "model.depth=2", "model.num_heads=2", "model.mlp_ratio=4", *NORMALISATION,
            "ffn.kind=exfusion", "ffn.variant=sw", "ffn.num_experts=2", "train.batch_size=16",
            "train.max_steps=1",
            f"init.from={timm_file}")
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert start["init"]["format"] == "timm"
    assert start["init"]["method"] == "copy"
