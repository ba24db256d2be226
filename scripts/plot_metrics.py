#!/usr/bin/env python3
"""Figures from a run's metrics.jsonl, or from a sweep directory, with matplotlib.

  .venv/bin/python scripts/plot_metrics.py RUN_DIR [--out DIR] [--figure all|fusion-weights|curves]
  .venv/bin/python scripts/plot_metrics.py SWEEP_DIR [--out DIR]

For a run: `fusion_weights.{png,svg}` (the ExFusion paper's Figure 5: each layer's fusion weight
per expert over training, one panel per layer; with a router per set, m_up solid and m_down
dashed) and `curves.{png,svg}` (train loss and accuracy per logged window, test accuracy and
loss per evaluation). For a sweep (a directory `exfusion sweep` wrote): `curves.{png,svg}` with
one line per configuration, the mean over its seeds, and a band of ± one standard deviation.
Figures go to DIR (default: the run or sweep directory). `--figure fusion-weights` on a log
without fusion weights (a dense or MoE run) is an error (exit code 2)."""
import argparse
import json
import math
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class InputError(Exception):
    pass


def read_log(path):
    records = []
    with open(path, encoding="utf-8") as log:
        for number, line in enumerate(log, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not a JSON line ({error.msg})") from None
    if not any(r.get("event") == "train" for r in records):
        raise InputError(f"{path}: no train events (is it an exfusion metrics.jsonl?)")
    return records


def save(figure, out, name):
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in ("png", "svg"):
        path = out / f"{name}.{suffix}"
        figure.savefig(path, dpi=130, bbox_inches="tight")
        written.append(path)
    plt.close(figure)
    return written


def fusion_weight_series(records):
    """{layer: {name: (steps, [[m_0 ...], ...])}} from the train events."""
    series = {}
    for record in records:
        if record.get("event") != "train" or "fusion_weights" not in record:
            continue
        for layer, weights in record["fusion_weights"].items():
            for name, values in weights.items():
                steps, rows = series.setdefault(layer, {}).setdefault(name, ([], []))
                steps.append(record["step"])
                rows.append(values)
    return series


def layer_key(name):
    digits = "".join(c if c.isdigit() else " " for c in name).split()
    return [int(d) for d in digits] or [0], name


def plot_fusion_weights(records, out, title):
    series = fusion_weight_series(records)
    if not series:
        raise InputError("no fusion weights in the log (a dense or MoE run logs none; "
                         "Figure 5 needs an ExFusion run)")
    layers = sorted(series, key=layer_key)
    columns = min(4, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows + 0.8),
                                squeeze=False, sharex=True, layout="constrained")
    for index, layer in enumerate(layers):
        axis = axes[index // columns][index % columns]
        for name, (steps, values) in series[layer].items():
            style = "--" if name == "m_down" else "-"
            for expert in range(len(values[0])):
                label = f"expert {expert}" + ("" if name == "m" else f" ({name})")
                axis.plot(steps, [v[expert] for v in values], style, color=f"C{expert}",
                          linewidth=1.2, label=label)
        axis.set_title(layer, fontsize=9)
        axis.grid(alpha=0.3)
        if index % columns == 0:
            axis.set_ylabel("fusion weight m")
        if index // columns == rows - 1:
            axis.set_xlabel("step")
    for index in range(len(layers), rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4),
                  fontsize=8)
    figure.suptitle(f"{title}: fusion weights per expert (ExFusion Figure 5)", fontsize=10)
    return save(figure, out, "fusion_weights")


def events(records, kind, key):
    picked = [r for r in records if r.get("event") == kind and key in r]
    return [r["step"] for r in picked], [r[key] for r in picked]


def plot_run_curves(records, out, title):
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    steps, loss = events(records, "train", "loss")
    loss_axis.plot(steps, loss, label="train loss")
    steps, test_loss = events(records, "eval", "test_loss")
    loss_axis.plot(steps, test_loss, "o-", label="test loss")
    # Image tasks log accuracy per sample, language tasks token_accuracy per token.
    name = "accuracy" if events(records, "train", "accuracy")[0] else "token_accuracy"
    steps, accuracy = events(records, "train", name)
    accuracy_axis.plot(steps, [100 * a for a in accuracy], label=f"train {name}")
    steps, test_accuracy = events(records, "eval", f"test_{name}")
    accuracy_axis.plot(steps, [100 * a for a in test_accuracy], "o-", label=f"test {name}")
    for axis, label in ((loss_axis, "loss"), (accuracy_axis, "accuracy (%)")):
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return save(figure, out, "curves")


def mean_std(columns):
    means, stds = [], []
    for values in columns:
        mean = sum(values) / len(values)
        means.append(mean)
        variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0
        stds.append(math.sqrt(variance))
    return means, stds


def plot_sweep_curves(sweep, out):
    runs = sweep / "runs"
    configurations = sorted(p for p in runs.iterdir() if p.is_dir())
    order = [row["configuration"] for row in json.loads((sweep / "results.json").read_text())]
    configurations.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    # The right panel: test accuracy where the task has it (image classification), else the
    # validation loss (language tasks: the paper's Figure 4 plots loss).
    right_key, right_scale, right_label = "test_loss", 1, "validation loss"
    for index, configuration in enumerate(configurations):
        logs = [read_log(m) for m in sorted(configuration.glob("seed-*/metrics.jsonl"))]
        if not logs:
            continue
        if index == 0 and events(logs[0], "eval", "test_accuracy")[0]:
            right_key, right_scale, right_label = "test_accuracy", 100, "test accuracy (%)"
        for axis, kind, key, scale in ((loss_axis, "train", "loss", 1),
                                       (accuracy_axis, "eval", right_key, right_scale)):
            curves = [events(log, kind, key) for log in logs]
            length = min(len(steps) for steps, _ in curves)
            if length == 0:
                continue
            steps = curves[0][0][:length]
            means, stds = mean_std([[scale * c[1][i] for c in curves] for i in range(length)])
            color = f"C{index % 10}"
            axis.plot(steps, means, "o-" if kind == "eval" else "-", color=color, markersize=3,
                      label=f"{configuration.name} (n={len(logs)})")
            axis.fill_between(steps, [m - s for m, s in zip(means, stds)],
                              [m + s for m, s in zip(means, stds)], color=color, alpha=0.15)
    loss_axis.set_ylabel("train loss")
    accuracy_axis.set_ylabel(right_label)
    for axis in (loss_axis, accuracy_axis):
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    accuracy_axis.legend(fontsize=7)
    figure.suptitle(f"{sweep.name}: mean over seeds ± 1 std", fontsize=10)
    return save(figure, out, "curves")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=pathlib.Path, help="run directory, metrics.jsonl or sweep")
    parser.add_argument("--out", type=pathlib.Path, help="directory for the figures")
    parser.add_argument("--figure", choices=("all", "fusion-weights", "curves"), default="all")
    args = parser.parse_args(argv)
    path = args.path
    try:
        if path.is_dir() and (path / "results.json").exists() and (path / "runs").is_dir():
            written = plot_sweep_curves(path, args.out or path)
        else:
            log = path / "metrics.jsonl" if path.is_dir() else path
            if not log.exists():
                raise InputError(f"{log}: no such file (expected a run directory, its "
                                 "metrics.jsonl or a sweep directory)")
            records = read_log(log)
            out = args.out or log.parent
            title = log.parent.name
            written = []
            if args.figure in ("all", "curves"):
                written += plot_run_curves(records, out, title)
            if args.figure == "fusion-weights" or (
                    args.figure == "all" and fusion_weight_series(records)):
                written += plot_fusion_weights(records, out, title)
    except InputError as error:
        print(f"plot_metrics: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
