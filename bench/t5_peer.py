"""CPU peer for the T5 step: the same T5 v1.1 that a fortunes config trains, built by Hugging Face
`transformers` (T5ForConditionalGeneration, fp32, dropout 0, untied lm_head), trained on random
token batches of the same batch size and lengths with torch's AdamW and gradient clipping, as a
user would write it in PyTorch. Prints one JSON line: target tokens/s and ms/step over the timed
steps. bench/t5_step_cpu.sh runs it beside `exfusion bench` on the same model.
Usage: .venv/bin/python bench/t5_peer.py [--batch 32] [--input-length 128] [--target-length 29]
       [--d-model 256 --d-kv 32 --d-ff 512 --heads 8 --layers 4 --vocab 8192] [--steps 20]"""
import argparse, json, os, time

import torch
from transformers import T5Config, T5ForConditionalGeneration


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--input-length", type=int, default=128)
    parser.add_argument("--target-length", type=int, default=29)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--d-kv", type=int, default=32)
    parser.add_argument("--d-ff", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = T5Config(vocab_size=args.vocab, d_model=args.d_model, d_kv=args.d_kv, d_ff=args.d_ff,
                      num_layers=args.layers, num_decoder_layers=args.layers,
                      num_heads=args.heads, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                      tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1)
    model = T5ForConditionalGeneration(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    inputs = torch.randint(0, args.vocab, (args.batch, args.input_length))
    # Labels without -100 padding: every target token counts, as in our span-corruption batches.
    labels = torch.randint(2, args.vocab, (args.batch, args.target_length))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    tokens = args.batch * args.target_length * args.steps
    print(json.dumps({
        "peer": "transformers T5ForConditionalGeneration, torch AdamW",
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": args.batch, "input_length": args.input_length,
        "target_length": args.target_length, "threads": args.threads,
        "ms_per_step": 1000 * seconds / args.steps,
        "tokens_per_s": tokens / seconds,
        "samples_per_s": args.batch * args.steps / seconds,
    }))


if __name__ == "__main__":
    main()
