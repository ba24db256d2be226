"""CPU peer for `exfusion generate`: the same model (the hf/ directory of one of our Llama runs,
LlamaForCausalLM, or the MixtralForCausalLM `exfusion export` writes), loaded by Hugging Face
`transformers` in fp32 and continuing the same prompt token ids greedily with its KV cache
(model.generate, do_sample=False, min_new_tokens = max_new_tokens so both sides make the same
number of tokens), as a user would call it. Prints one JSON line: new tokens per second over the
whole call (the prompt's forward included, as ours counts it).
bench/generate_vs_peer.sh runs it beside `exfusion generate` on the same run.
Usage: .venv/bin/python bench/llama_generate_peer.py HF_DIR --prompt-ids 1,2,3 [--max-new-tokens 128]
       [--warmup 1] [--threads N]"""
import argparse, json, os, time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hf_dir")
    parser.add_argument("--prompt-ids", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.hf_dir, dtype=torch.float32).eval()
    prompt = torch.tensor([[int(token) for token in args.prompt_ids.split(",")]])

    def generate():
        with torch.inference_mode():
            return model.generate(prompt, max_new_tokens=args.max_new_tokens,
                                  min_new_tokens=args.max_new_tokens, do_sample=False)

    for _ in range(args.warmup):
        generate()
    start = time.perf_counter()
    out = generate()
    seconds = time.perf_counter() - start
    new_tokens = out.shape[1] - prompt.shape[1]
    print(json.dumps({
        "peer": f"transformers {type(model).__name__}.generate, greedy, KV cache",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "prompt_tokens": prompt.shape[1],
        "new_tokens": new_tokens,
        "tokens_per_s": new_tokens / seconds,
    }))


if __name__ == "__main__":
    main()
