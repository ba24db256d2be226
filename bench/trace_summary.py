"""Summarises a Chrome trace from `exfusion bench --profile` (or torch.profiler's
export_chrome_trace): GPU busy time against the profiled wall span, and the kernels that
take the time, so a step's cost can be read without a trace viewer.
Usage: python3 bench/trace_summary.py TRACE.json [--steps N] [--top K]"""
import argparse
import collections
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, default=3, help="steps the trace holds (per-step numbers)")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    with open(a.trace) as f:
        events = json.load(f)["traceEvents"]
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not gpu:
        raise SystemExit(f"{a.trace}: no GPU events (was it taken on a CPU?)")
    start = min(e["ts"] for e in gpu)
    end = max(e["ts"] + e["dur"] for e in gpu)
    busy = sum(e["dur"] for e in gpu)
    per_name = collections.defaultdict(lambda: [0.0, 0])
    for e in gpu:
        per_name[e["name"]][0] += e["dur"]
        per_name[e["name"]][1] += 1
    print(json.dumps({"trace": a.trace, "steps": a.steps, "gpu_span_ms_per_step": round((end - start) / 1e3 / a.steps, 3),
                      "gpu_busy_ms_per_step": round(busy / 1e3 / a.steps, 3),
                      "busy_fraction": round(busy / (end - start), 3),
                      "kernels_per_step": round(len(gpu) / a.steps, 1)}))
    print("| ms/step | calls/step | share | kernel |\n| ---: | ---: | ---: | --- |")
    for name, (dur, n) in sorted(per_name.items(), key=lambda kv: -kv[1][0])[: a.top]:
        print(f"| {dur / 1e3 / a.steps:.3f} | {n / a.steps:.0f} | {100 * dur / busy:.1f}% | {name[:110]} |")


if __name__ == "__main__":
    main()
