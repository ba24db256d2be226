"""CPU peer for the Swin and PVT v2 training step: the model of one of our configs
(configs/fmnist-swin-*.yaml, configs/fmnist-pvt-v2-*.yaml, model.kind swin or pvt_v2) built by
timm (SwinTransformer, PyramidVisionTransformerV2: the classes our exports load into), trained
on random images of the config's size with the config's batch, torch's AdamW (its weight decay
on every weight of two or more dimensions), label smoothing and gradient clipping, fp32, as a
user would write it in PyTorch; no stochastic depth (timm's Swin default is 0.1; our models have
none). Prints one JSON line: images/s and ms/step over the timed steps.
bench/cpu_step_vs_peer.sh runs it beside `exfusion bench` on the same config.
Usage: .venv/bin/python bench/backbone_peer.py CONFIG [--steps 30] [--warmup 5] [--threads N]"""
import argparse, json, os

import timm
import torch
import yaml
from peer_training import adamw_like_ours, timed_seconds
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from timm.models.swin_transformer import SwinTransformer


def timm_model(model):
    """timm's model for our config's model section (the keys our exports write into model.json)."""
    if model["kind"] == "swin":
        return SwinTransformer(img_size=model["img_size"], patch_size=model["patch_size"],
                               in_chans=model["in_chans"], num_classes=model["num_classes"],
                               embed_dim=model["embed_dim"], depths=tuple(model["depths"]),
                               num_heads=tuple(model["num_heads"]),
                               window_size=model["window_size"], mlp_ratio=model["mlp_ratio"],
                               drop_path_rate=0.0)
    if model["kind"] == "pvt_v2":
        return PyramidVisionTransformerV2(in_chans=model["in_chans"],
                                          num_classes=model["num_classes"],
                                          depths=tuple(model["depths"]),
                                          embed_dims=tuple(model["embed_dims"]),
                                          num_heads=tuple(model["num_heads"]),
                                          sr_ratios=tuple(model["sr_ratios"]),
                                          mlp_ratios=tuple(model["mlp_ratios"]),
                                          drop_path_rate=0.0)
    raise SystemExit(f"{model['kind']}: this peer builds model.kind swin or pvt_v2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    model_config, train = config["model"], config.get("train", {})
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm_model(model_config).train()
    optimizer = adamw_like_ours(model, train, default_lr=2e-3)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=train.get("label_smoothing", 0.1))
    batch = train.get("batch_size", 128)
    size = model_config["img_size"]
    images = torch.randn(batch, model_config["in_chans"], size, size)
    labels = torch.randint(0, model_config["num_classes"], (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.get("clip_grad", 1.0))
        optimizer.step()

    seconds = timed_seconds(step, args.warmup, args.steps)
    print(json.dumps({
        "peer": f"timm {type(model).__name__}, torch AdamW",
        "timm": timm.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "steps": args.steps,
        "ms_per_step": 1000 * seconds / args.steps,
        "img_per_s": batch * args.steps / seconds,
    }))


if __name__ == "__main__":
    main()
