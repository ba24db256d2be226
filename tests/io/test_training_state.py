"""The unfused training state, read with the safetensors library: experts with their expert
axis, the memory bank, Adam's moments and step counters, and `info`'s parameter count."""
import json

import torch
from safetensors.torch import load_file

from conftest import run_cli


def test_training_state_reads_with_safetensors(exfusion_cli, toy_idx_dir, tmp_path):
    run = tmp_path / "run"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, "--threads", "1",
            "--set", "model.embed_dim=16", "model.depth=1", "model.num_heads=2",
            "train.max_steps=3", "train.batch_size=16", "train.epochs=1")
    state = load_file(str(run / "state.safetensors"))
    assert state["trainer.step"].item() == 3
    assert state["model.blocks.0.mlp.fc1.weight"].shape == (4, 32, 16)
    assert state["model.blocks.0.mlp.fusion.bank"].dtype == torch.float32
    steps = [v for k, v in state.items() if k.startswith("optimizer.") and k.endswith(".step")]
    assert steps and all(s.item() == 3 for s in steps)
    info = json.loads(run_cli(exfusion_cli, "info", "--json", run / "state.safetensors"))
    assert info["params"] == sum(v.numel() for k, v in state.items()
                                 if k.startswith("model.") and not k.endswith(".bank"))
    fused = load_file(str(run / "model.safetensors"))
    assert fused["blocks.0.mlp.fc1.weight"].shape == (32, 16)
