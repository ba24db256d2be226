"""What the CPU peers (bench/backbone_peer.py, bench/llama_peer.py) share: the optimiser a user
of PyTorch sets up as our config describes it, and the timing of warm-up and timed steps."""
import time

import torch


def adamw_like_ours(model, train, default_lr):
    """torch's AdamW at the config's lr, weight decay on every weight of two or more dimensions
    (ours exempts norms, biases and embeddings: the same split for these models)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": train.get("weight_decay", 0.05)},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=train.get("lr", default_lr))


def timed_seconds(step, warmup, steps):
    """Runs `step` warmup times, then times `steps` more: their wall seconds."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start
