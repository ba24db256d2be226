"""scripts/plot_metrics.py draws Figure 5 and the training curves from a real metrics.jsonl (a
short ExFusion-mb run of the CLI) as PNG and SVG, refuses a dense run's log for Figure 5 with
a clear message, and draws a sweep's curves from a directory `exfusion sweep` wrote."""
import json
import pathlib
import subprocess
import sys

from conftest import run_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "plot_metrics.py"
TINY = ("--threads", "1", "--set", "model.embed_dim=16", "model.depth=2", "model.num_heads=2",
        "train.batch_size=16", "train.epochs=2", "train.log_every=1")


def plot(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True)


def assert_figures(directory, name):
    png, svg = directory / f"{name}.png", directory / f"{name}.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000  # axes, lines and labels, not an empty canvas
    assert "<svg" in svg.read_text()


def test_figure_5_and_curves_from_a_real_run(exfusion_cli, toy_idx_dir, tmp_path):
    run = tmp_path / "mb"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, *TINY, "ffn.kind=exfusion",
            "ffn.variant=mb", "ffn.num_experts=3", "ffn.router=per-set")
    result = plot(run, "--out", tmp_path / "figures")
    assert result.returncode == 0, result.stderr
    assert_figures(tmp_path / "figures", "fusion_weights")
    assert_figures(tmp_path / "figures", "curves")
    svg = (tmp_path / "figures" / "fusion_weights.svg").read_text()
    assert "blocks.1" in svg and "m_down" in svg  # one panel per layer, both expert sets


def test_a_log_without_fusion_weights_is_refused_for_figure_5(exfusion_cli, toy_idx_dir,
                                                               tmp_path):
    run = tmp_path / "dense"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, *TINY, "ffn.kind=dense")
    refused = plot(run / "metrics.jsonl", "--figure", "fusion-weights")
    assert refused.returncode == 2
    assert "no fusion weights in the log" in refused.stderr
    drawn = plot(run)  # all: the curves, and no Figure 5 for a dense run
    assert drawn.returncode == 0, drawn.stderr
    assert_figures(run, "curves")
    assert not (run / "fusion_weights.png").exists()
    not_a_log = tmp_path / "notes.jsonl"
    not_a_log.write_text("hello\n")
    assert "not a JSON line" in plot(not_a_log).stderr


def test_a_sweeps_curves(exfusion_cli, toy_idx_dir, tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        "set: {model.embed_dim: 16, model.depth: 2, model.num_heads: 2, train.batch_size: 16,\n"
        "      train.epochs: 2, train.threads: 1}\nseeds: 2\n"
        "grid: {ffn.kind: [dense, exfusion]}\n")
    out = tmp_path / "sweep"
    run_cli(exfusion_cli, "sweep", sweep_file, "--out", out, "--data", toy_idx_dir)
    rows = json.loads((out / "results.json").read_text())
    assert [r["configuration"] for r in rows] == ["kind=dense", "kind=exfusion"]
    result = plot(out)
    assert result.returncode == 0, result.stderr
    assert_figures(out, "curves")
    assert "kind=exfusion (n=2)" in (out / "curves.svg").read_text()
