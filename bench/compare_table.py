"""Side-by-side table of `exfusion bench` lines and the peer benchmark's lines (one run,
one GPU), as Markdown for docs/benchmarks.md: each of our rows with its ratio to our dense
step (taken the same way: eager or captured in a CUDA graph, with or without the LayerNorm
kernels and the bias-gradient epilogue) and to the peer's compiled dense step for the same
model and batch. The "fallbacks" column counts the calls that left a fast path switched on for the row
(`fast_path_calls` in the bench JSON) and names a switched-on path that no call took: anything
but 0 means the row did not time what it claims."""
import json
import sys

PEER_NAMES = {"vit_base_patch16_224": 768, "deit_tiny_patch16_224": 192}
MODEL_NAMES = {768: "ViT-B/16", 192: "DeiT-Ti/16"}


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.startswith("{")]


def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def has_expert_banks(row):
    return row["ffn"] not in ("dense", "moe")


LAYER_SPECIFIC_PATHS = {"rms_norm_kernels", "gated_activation_kernels", "cross_entropy_kernels",
                        "depthwise_conv_kernels"}


def fallbacks(row):
    """The calls that left a fast path, and the paths switched on for a CUDA step (the row's
    flag) that no call took, which would time ATen's path as well."""
    calls = row.get("fast_path_calls")
    if calls is None:
        return "–"
    missed = [f"{path} {c['fell_back']}" for path, c in calls.items() if c["fell_back"]]
    for path, c in calls.items():
        # The norm, gate, loss and grid-convolution kernels serve layers and tasks only some runs
        # have (T5's RMS norms and gated FFNs, a language model's loss, PVT v2's FFN
        # convolution): a ViT's step has none to take.
        if path in LAYER_SPECIFIC_PATHS:
            continue
        applies = path != "expert_kernels" or has_expert_banks(row)
        if applies and row.get(path) and not c["taken"] and not c["fell_back"]:
            missed.append(f"{path} not taken")
    return ", ".join(missed) if missed else "0"


def main(ours_path, peer_path):
    ours, peer = lines(ours_path), lines(peer_path)

    def peer_row(dim, batch, variant, experts, compiled):
        return next((p for p in peer if PEER_NAMES.get(p["model"]) == dim and p["batch"] == batch
                     and p["variant"] == variant and p["experts"] == experts
                     and bool(p["compiled"]) == compiled), {})

    def our_dense(dim, batch, graph, layer_norm_kernels, bias_grad_epilogue):
        return next((r for r in ours if r["model"]["embed_dim"] == dim and r["batch"] == batch
                     and r["ffn"] == "dense" and r.get("cuda_graph", False) == graph
                     and r.get("layer_norm_kernels", False) == layer_norm_kernels
                     and r.get("bias_grad_epilogue", False) == bias_grad_epilogue), {})

    print("| model, batch | FFN | N | expert kernels | LN kernels | bias-grad epilogue "
          "| CUDA graph | fallbacks | ours img/s | ms/step | × our dense | × peer compiled dense | peak MiB | Δ MiB vs our dense | MFU "
          "| Δ ms vs our dense | traffic floor ms "
          "| peer eager img/s | peer compiled img/s | peer peak MiB (eager) |")
    print("| --- | --- | ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: | ---: |")
    for row in ours:
        dim, batch, ffn, n = row["model"]["embed_dim"], row["batch"], row["ffn"], row["experts"]
        graph = row.get("cuda_graph", False)
        ln_kernels = row.get("layer_norm_kernels", False)
        epilogue = row.get("bias_grad_epilogue", False)
        dense = our_dense(dim, batch, graph, ln_kernels, epilogue)
        peer_dense = peer_row(dim, batch, "dense", 0, True)
        eager = peer_row(dim, batch, ffn, n, False)
        compiled = peer_row(dim, batch, ffn, n, True)
        vs_dense = row["img_per_s"] / dense["img_per_s"] if dense else None
        vs_peer = row["img_per_s"] / peer_dense["img_per_s"] if peer_dense else None
        mem = row.get("peak_mem_mib")
        dmem = mem - dense["peak_mem_mib"] if dense and mem is not None else None
        mfu = 100 * row["mfu"] if row.get("mfu") is not None else None
        if ffn == "moe":
            ffn = f"moe, k={row['top_k']}"
        kernels = ("yes" if row.get("expert_kernels") else "no") if has_expert_banks(row) else "–"
        dms = row["ms_per_step"] - dense["ms_per_step"] if dense else None
        print(f"| {MODEL_NAMES.get(dim, f'dim {dim}')}, {batch} | {ffn} | {n} | {kernels} "
              f"| {'yes' if ln_kernels else 'no'} | {'yes' if epilogue else 'no'} "
              f"| {'yes' if graph else 'no'} | {fallbacks(row)} "
              f"| {row['img_per_s']:.0f} | {row['ms_per_step']:.2f} | {fmt(vs_dense, '.3f')} "
              f"| {fmt(vs_peer, '.3f')} | {fmt(mem, '.0f')} | {fmt(dmem, '+.0f')} | {fmt(mfu, '.1f')} "
              f"| {fmt(dms, '+.2f')} | {fmt(row.get('exfusion_floor_ms'), '.2f')} "
              f"| {eager.get('img_per_s', '–')} | {compiled.get('img_per_s', '–')} "
              f"| {eager.get('peak_mem_mib', '–')} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
