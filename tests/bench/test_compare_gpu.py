"""bench/compare_gpu.sh and bench/compare_table.py run on the CPU: the script's control flow
(every row runs, a failing row is logged and the script exits 1 after the table) with the real
`exfusion bench` shrunk to a CPU-sized model, and the table's ratios against the JSON lines."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEER_IMG_PER_S = {("vit_base_patch16_224", "dense", 1): 3000.0,
                  ("deit_tiny_patch16_224", "dense", 1): 10000.0}

# Prints what ../shared/bench/timm_anchor.py prints: a version line, then one JSON line per
# configuration, with made-up numbers.
FAKE_PEER = """
import argparse, json
ap = argparse.ArgumentParser()
ap.add_argument("--configs"); ap.add_argument("--compile"); ap.add_argument("--variants")
ap.add_argument("--steps")
a = ap.parse_args()
print("2.11.0 fake-gpu 1.0.29")
rates = %r
for cfg in a.configs.split(","):
    name, batch = cfg.split(":")
    for compiled in map(int, a.compile.split(",")):
        for variant, n in [("dense", 0)] + [(v, 4) for v in a.variants.split(",")]:
            rate = dict((tuple(k.split("|")[:2]) + (int(k.split("|")[2]),), v)
                        for k, v in rates.items()).get((name, variant, compiled), 1000.0)
            print(json.dumps(dict(model=name, experts=n, variant=variant, batch=int(batch),
                                  compiled=compiled, img_per_s=rate, ms_per_step=1.0,
                                  peak_mem_mib=100, params_m=1.0)))
""" % {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in PEER_IMG_PER_S.items()}


def table_rows(markdown):
    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in l.strip("|").split("|")))) for l in lines[2:]]


@pytest.fixture
def bench_tree(tmp_path, exfusion_cli):
    """A copy of the two scripts beside a no-op build and a build-gpu/exfusion that runs the
    real CLI on the CPU with the model cut to one block at 32 px."""
    (tmp_path / "bench").mkdir()
    for name in ("compare_gpu.sh", "compare_table.py"):
        shutil.copy(ROOT / "bench" / name, tmp_path / "bench" / name)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "build.sh").write_text("#!/usr/bin/env bash\nexit 0\n")
    (tmp_path / "build-gpu").mkdir()
    wrapper = tmp_path / "build-gpu" / "exfusion"
    wrapper.write_text(f'#!/usr/bin/env bash\nexec "{exfusion_cli}" "$@" --device cpu --threads 1 '
                       "--warmup 1 --set model.img_size=32 model.depth=1\n")
    for script in (wrapper, tmp_path / "scripts" / "build.sh"):
        script.chmod(0o755)
    (tmp_path / ".peer").mkdir()
    (tmp_path / ".peer" / "timm_anchor.py").write_text(FAKE_PEER)
    return tmp_path


def test_every_row_runs_failures_are_logged_and_the_table_matches_the_json(bench_tree):
    out = bench_tree / "out"
    result = subprocess.run(["bash", "bench/compare_gpu.sh"], cwd=bench_tree, text=True,
                            capture_output=True,
                            env={**os.environ, "OUT": str(out), "BENCH_STEPS": "1"})
    # On the CPU the four CUDA-graph rows (dense and mb, two models) fail; the rest still run.
    assert result.returncode == 1, result.stdout + result.stderr
    failures = (out / "failures.log").read_text()
    assert failures.count("FAILED") == 4, failures
    assert failures.count("--cuda-graph true") == 4, failures
    assert "4 part(s) failed" in result.stderr
    ours = [json.loads(l) for l in (out / "exfusion.jsonl").read_text().splitlines()]
    assert len(ours) == 15
    assert [r["experts"] for r in ours if r["ffn"] == "mb"] == [4, 4, 4, 4, 8, 16, 32]
    assert [p.split()[0] for p in (out / "phases.txt").read_text().splitlines()] == \
        ["build", "ours", "peer"]

    rows = table_rows((out / "table.md").read_text())
    assert len(rows) == len(ours)
    for row, line in zip(rows, ours):
        dense = next(r for r in ours if r["model"] == line["model"] and r["batch"] == line["batch"]
                     and r["ffn"] == "dense" and r["layer_norm_kernels"] is False
                     and r["bias_grad_epilogue"] is False)
        peer_name = "vit_base_patch16_224" if line["model"]["embed_dim"] == 768 \
            else "deit_tiny_patch16_224"
        # Table cells are rounded to 3 decimals.
        assert float(row["× our dense"]) == pytest.approx(
            line["img_per_s"] / dense["img_per_s"], abs=6e-4)
        assert float(row["× peer compiled dense"]) == pytest.approx(
            line["img_per_s"] / PEER_IMG_PER_S[(peer_name, "dense", 1)], abs=6e-4)
        assert row["fallbacks"] == "0"
        # The peer ran dense and mb with 4 experts only.
        peer_ran = line["ffn"] == "dense" or (line["ffn"] == "mb" and line["experts"] == 4)
        assert (row["peer compiled img/s"] != "–") == peer_ran, row


def test_a_row_that_fell_back_says_which_path(tmp_path):
    row = {"model": {"embed_dim": 192}, "batch": 8, "ffn": "dense", "experts": 0,
           "img_per_s": 100.0, "ms_per_step": 80.0, "peak_mem_mib": 10.0, "mfu": 0.1,
           "layer_norm_kernels": True, "bias_grad_epilogue": True, "cuda_graph": False,
           "fast_path_calls": {"expert_kernels": {"taken": 0, "fell_back": 0},
                               "layer_norm_kernels": {"taken": 24, "fell_back": 3},
                               "bias_grad_epilogue": {"taken": 0, "fell_back": 48}}}
    older = {key: value for key, value in row.items() if key != "fast_path_calls"}
    (tmp_path / "ours.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(older) + "\n")
    (tmp_path / "peer.jsonl").write_text("")
    table = subprocess.run(["python3", str(ROOT / "bench" / "compare_table.py"),
                            tmp_path / "ours.jsonl", tmp_path / "peer.jsonl"],
                           capture_output=True, text=True, check=True).stdout
    rows = table_rows(table)
    assert rows[0]["fallbacks"] == "layer_norm_kernels 3, bias_grad_epilogue 48"
    assert rows[1]["fallbacks"] == "–"  # a line from before the counters
    assert rows[0]["× peer compiled dense"] == "–"
