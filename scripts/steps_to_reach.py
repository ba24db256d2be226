#!/usr/bin/env python3
"""How many steps each configuration of a sweep needs to reach the baseline's final loss: the
paper's Figure 4 claim ("ExFusion reaches dense's 100k-step loss at 30k steps") as a number.

  .venv/bin/python scripts/steps_to_reach.py SWEEP_DIR [--baseline NAME] [--window 5]

For every configuration, over the mean of its seeds: the validation loss (`test_loss` of each
evaluation) and the training loss (each logged window, smoothed by a running mean of --window
windows). The baseline's last value is the target; a configuration's step is the first at which
its curve is at or below it (null if never), and `speedup` is the baseline's last step over it.
Prints one JSON object."""
import argparse
import json
import pathlib
import sys


def read_events(path, kind, key):
    steps, values = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("event") == kind and key in record:
            steps.append(record["step"])
            values.append(record[key])
    return steps, values


def mean_curve(logs, kind, key):
    curves = [read_events(log, kind, key) for log in logs]
    length = min(len(steps) for steps, _ in curves)
    if length == 0:
        return [], []
    steps = curves[0][0][:length]
    return steps, [sum(c[1][i] for c in curves) / len(curves) for i in range(length)]


def running_mean(values, window):
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1):i + 1]
        out.append(sum(part) / len(part))
    return out


def first_step_at_or_below(steps, values, target):
    for step, value in zip(steps, values):
        if value <= target:
            return step
    return None


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=pathlib.Path)
    parser.add_argument("--baseline", help="configuration name (default: the sweep's baseline)")
    parser.add_argument("--window", type=int, default=5, help="training-loss windows averaged")
    args = parser.parse_args(argv)
    results_file = args.sweep / "results.json"
    if not results_file.exists():
        print(f"{results_file}: no such file (expected a directory `exfusion sweep` wrote)",
              file=sys.stderr)
        return 2
    rows = json.loads(results_file.read_text())
    names = [row["configuration"] for row in rows]
    baseline = args.baseline or next((r["configuration"] for r in rows if r.get("baseline")),
                                     names[0])
    if baseline not in names:
        print(f"--baseline {baseline}: not a configuration of {args.sweep} "
              f"({', '.join(names)})", file=sys.stderr)
        return 2
    curves = {}
    for name in names:
        logs = sorted((args.sweep / "runs" / name).glob("seed-*/metrics.jsonl"))
        validation = mean_curve(logs, "eval", "test_loss")
        steps, train = mean_curve(logs, "train", "loss")
        curves[name] = {"seeds": len(logs), "validation": validation,
                        "train": (steps, running_mean(train, args.window))}
    out = {"baseline": baseline, "configurations": {}}
    for curve in ("validation", "train"):
        base_steps, base_values = curves[baseline][curve]
        if not base_steps:
            continue
        target, base_last = base_values[-1], base_steps[-1]
        out[f"{curve}_target"] = target
        for name in names:
            steps, values = curves[name][curve]
            reached = first_step_at_or_below(steps, values, target)
            row = out["configurations"].setdefault(name, {"seeds": curves[name]["seeds"]})
            row[f"{curve}_final"] = values[-1] if values else None
            row[f"{curve}_steps_to_target"] = reached
            row[f"{curve}_speedup"] = base_last / reached if reached else None
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
