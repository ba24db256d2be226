"""CPU peer for the Llama training step: the model of one of our causal_lm configs
(configs/llama-fortunes-dense.yaml, model.kind llama) built by Hugging Face `transformers`
(LlamaForCausalLM, fp32, eager attention as a user gets it on the CPU), trained on random token
batches of the config's batch and sequence length with torch's AdamW (weight decay on every
weight of two or more dimensions, as ours), gradient clipping, loss per token, as a user would
write it in PyTorch. Prints one JSON line: tokens/s and ms/step over the timed steps.
bench/cpu_step_vs_peer.sh runs it beside `exfusion bench` on the same config.
Usage: .venv/bin/python bench/llama_peer.py CONFIG [--steps 20] [--warmup 3] [--threads N]"""
import argparse, json, os

import torch
import transformers
import yaml
from peer_training import adamw_like_ours, timed_seconds
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    model_config, train = config["model"], config.get("train", {})
    if model_config["kind"] != "llama":
        raise SystemExit(f"{model_config['kind']}: this peer builds model.kind llama")
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rope_theta",
            "rms_norm_eps", "tie_word_embeddings")
    settings = {key: model_config[key] for key in keys if key in model_config}
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**settings)).train()
    optimizer = adamw_like_ours(model, train, default_lr=1e-3)
    batch = train.get("batch_size", 32)
    length = model_config.get("sequence_length", 256)
    vocab = model_config["vocab_size"]
    inputs = torch.randint(0, vocab, (batch, length))
    targets = torch.randint(0, vocab, (batch, length))

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.get("clip_grad", 1.0))
        optimizer.step()

    seconds = timed_seconds(step, args.warmup, args.steps)
    print(json.dumps({
        "peer": "transformers LlamaForCausalLM, torch AdamW",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "steps": args.steps,
        "ms_per_step": 1000 * seconds / args.steps,
        "tokens_per_s": batch * length * args.steps / seconds,
    }))


if __name__ == "__main__":
    main()
