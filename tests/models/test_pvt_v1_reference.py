"""PVT v1's export against a PyTorch reference of the model written here from the paper and the
authors' description (spatial-reduction attention, per-stage patch and position embeddings,
the class token in the last stage; the names of their classification/pvt.py). timm has no PVT
v1, so this reference stands in for the reader: a dense and a fused ExFusion-mb run load into it
with strict=True and give our logits (max abs diff <= 1e-4, fp32 on CPU)."""
import json

import pytest
import torch
from torch import nn
from safetensors.torch import load_file

from conftest import read_idx, run_cli

LOGIT_TOLERANCE = 1e-4
# 28-px images in 2-pixel patches: a 14 × 14 grid, then 7 × 7 with the class token.
SMALL_PVT = ["model.kind=pvt_v1", "model.img_size=28", "model.in_chans=1", "model.patch_size=2",
             "model.embed_dims=[16,32]", "model.num_heads=[1,2]", "model.mlp_ratios=[4,2]",
             "model.depths=[2,2]", "model.sr_ratios=[2,1]", "model.num_classes=10"]


class ReductionAttention(nn.Module):
    """Queries from every token; keys and values from the grid shrunk by a stride-r convolution
    and a LayerNorm where r > 1."""

    def __init__(self, dim, heads, ratio):
        super().__init__()
        self.heads, self.ratio = heads, ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if ratio > 1:
            self.sr = nn.Conv2d(dim, dim, ratio, stride=ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, height, width):
        batch, tokens, dim = x.shape
        head_dim = dim // self.heads
        q = self.q(x).reshape(batch, tokens, self.heads, head_dim).permute(0, 2, 1, 3)
        source = x
        if self.ratio > 1:
            grid = x.permute(0, 2, 1).reshape(batch, dim, height, width)
            source = self.norm(self.sr(grid).reshape(batch, dim, -1).permute(0, 2, 1))
        kv = self.kv(source).reshape(batch, -1, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ kv[0].transpose(-2, -1)) * head_dim ** -0.5
        out = scores.softmax(-1) @ kv[1]
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ReductionAttention(dim, heads, ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, height, width):
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), x.shape[2], x.shape[3]


class PvtV1(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, num_classes, embed_dims, num_heads,
                 mlp_ratios, qkv_bias, depths, sr_ratios):
        super().__init__()
        assert qkv_bias
        self.stages = len(depths)
        grid = img_size // patch_size
        for k in range(self.stages):
            tokens = (grid >> k) ** 2 + (1 if k == self.stages - 1 else 0)
            setattr(self, f"pos_embed{k + 1}", nn.Parameter(torch.zeros(1, tokens, embed_dims[k])))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))
        for k in range(self.stages):
            setattr(self, f"patch_embed{k + 1}",
                    PatchEmbed(in_chans if k == 0 else embed_dims[k - 1], embed_dims[k],
                               patch_size if k == 0 else 2))
            setattr(self, f"block{k + 1}", nn.ModuleList(
                Block(embed_dims[k], num_heads[k], mlp_ratios[k], sr_ratios[k])
                for _ in range(depths[k])))
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.head = nn.Linear(embed_dims[-1], num_classes)

    def forward(self, x):
        batch = x.shape[0]
        for k in range(1, self.stages + 1):
            x, height, width = getattr(self, f"patch_embed{k}")(x)
            if k == self.stages:
                x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
            x = x + getattr(self, f"pos_embed{k}")
            for block in getattr(self, f"block{k}"):
                x = block(x, height, width)
            if k != self.stages:
                x = x.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        return self.head(self.norm(x)[:, 0])


@pytest.mark.parametrize("ffn", [["ffn.kind=dense"], ["ffn.kind=exfusion", "ffn.variant=mb"]],
                         ids=["dense", "mb"])
def test_pvt_v1_export_loads_into_the_reference_with_our_logits(exfusion_cli, toy_idx_dir,
                                                                  tmp_path, ffn):
    run = tmp_path / "run"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, "--threads", "1",
            "--set", *SMALL_PVT, *ffn, "train.max_steps=4", "train.batch_size=16",
            "train.epochs=1")
    logits_file = tmp_path / "logits.safetensors"
    run_cli(exfusion_cli, "eval", run, "--save-logits", logits_file)
    ours = load_file(str(logits_file))

    config = json.loads((run / "model.json").read_text())
    assert config["architecture"] == "pvt_v1"
    model = PvtV1(**config["pvt_kwargs"])
    state = load_file(str(run / config["weights"]))
    assert set(state) == set(model.state_dict()), "names differ from the authors'"
    model.load_state_dict(state, strict=True)
    model.eval()
    images = torch.from_numpy(read_idx(toy_idx_dir / "t10k-images-idx3-ubyte").copy())
    mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(config["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        theirs = model((images.unsqueeze(1).float() / 255.0 - mean) / std)
    diff = (theirs - ours["logits"]).abs().max().item()
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"
