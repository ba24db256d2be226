"""Side-by-side table of `exfusion bench` lines and the peer benchmark's lines (one run,
one GPU), as Markdown for docs/benchmarks.md."""
import json
import sys

PEER_NAMES = {"vit_base_patch16_224": 768, "deit_tiny_patch16_224": 192}


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.startswith("{")]


def main(ours_path, peer_path):
    ours, peer = lines(ours_path), lines(peer_path)
    print("| model, batch | FFN | ours img/s | ours peak MiB | ours MFU | peer eager img/s "
          "| peer compiled img/s | peer peak MiB (eager) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in ours:
        dim, batch, ffn = row["model"]["embed_dim"], row["batch"], row["ffn"]
        match = [p for p in peer if PEER_NAMES.get(p["model"]) == dim and p["batch"] == batch
                 and p["variant"] == ffn]
        eager = next((p for p in match if not p["compiled"]), {})
        compiled = next((p for p in match if p["compiled"]), {})
        name = {768: "ViT-B/16", 192: "DeiT-Ti/16"}.get(dim, f"dim {dim}")
        mfu = f"{100 * row['mfu']:.1f} %" if row.get("mfu") is not None else "–"
        print(f"| {name}, {batch} | {ffn} | {row['img_per_s']:.0f} | {row['peak_mem_mib'] or 0:.0f} "
              f"| {mfu} | {eager.get('img_per_s', '–')} | {compiled.get('img_per_s', '–')} "
              f"| {eager.get('peak_mem_mib', '–')} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
