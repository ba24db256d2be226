"""bench/compare_gpu.sh and bench/compare_table.py run on the CPU: the script's control flow
(every row runs; a failing or hanging row and a failing peer are logged and the script exits 1
after the table) with the real `exfusion bench` shrunk to a CPU-sized model, and the table's
ratios and fallbacks against the JSON lines."""
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
# configuration, with made-up numbers; then fails, as a peer that crashes after its runs would.
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
            rate = rates.get((name, variant, compiled), 1000.0)
            print(json.dumps(dict(model=name, experts=n, variant=variant, batch=int(batch),
                                  compiled=compiled, img_per_s=rate, ms_per_step=1.0,
                                  peak_mem_mib=100, params_m=1.0)))
raise SystemExit(1)
""" % (PEER_IMG_PER_S,)


def table_rows(markdown):
    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in l.strip("|").split("|")))) for l in lines[2:]]


@pytest.fixture
def bench_tree(tmp_path, exfusion_cli):
    """A copy of the two scripts beside a no-op build and a build-gpu/exfusion that runs the
    real CLI on the CPU with the model cut to one block at 32 px, and hangs for N = 32."""
    (tmp_path / "bench").mkdir()
    for name in ("compare_gpu.sh", "compare_table.py"):
        shutil.copy(ROOT / "bench" / name, tmp_path / "bench" / name)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "build.sh").write_text("#!/usr/bin/env bash\nexit 0\n")
    (tmp_path / "build-gpu").mkdir()
    wrapper = tmp_path / "build-gpu" / "exfusion"
    wrapper.write_text('#!/usr/bin/env bash\ncase "$*" in *"--experts 32"*) exec sleep 600;; esac\n'
                       f'exec "{exfusion_cli}" "$@" --device cpu --threads 1 '
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
                            env={**os.environ, "OUT": str(out), "BENCH_STEPS": "1",
                                 "BENCH_ROW_TIMEOUT": "30"})
    # The four CUDA-graph rows (dense and mb, two models) exit 2 (one warm-up step is too few
    # for a capture), the N = 32 row is stopped at its timeout, the peer fails after its runs;
    # the other rows, the peer's lines and the table are still there.
    assert result.returncode == 1, result.stdout + result.stderr
    failures = (out / "failures.log").read_text()
    assert failures.count("FAILED (exit 2): exfusion bench") == 4, failures
    assert failures.count("--cuda-graph true") == 4, failures
    assert failures.count("FAILED (exit 124): exfusion bench") == 1, failures
    assert "--experts 32" in failures
    assert "FAILED: the peer benchmark" in failures
    assert "6 part(s) failed" in result.stderr
    ours = [json.loads(l) for l in (out / "exfusion.jsonl").read_text().splitlines()]
    assert len(ours) == 16
    assert [r["experts"] for r in ours if r["ffn"] == "mb"] == [4, 4, 4, 4, 8, 16]
    assert [r["experts"] for r in ours if r["ffn"] == "ewa"] == [4, 4]
    assert (out / "rows.err").read_text().count("== exfusion bench") == 21
    assert [p.split()[0] for p in (out / "phases.txt").read_text().splitlines()] == \
        ["build", "ours", "peer"]
    assert not (out / "table.md.tmp").exists()

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


def our_row(ffn, img_per_s, ln=True, epilogue=True, graph=False, calls=None):
    return {"model": {"embed_dim": 192}, "batch": 8, "ffn": ffn, "experts": 4 * (ffn == "mb"),
            "img_per_s": img_per_s, "ms_per_step": 800.0 / img_per_s, "peak_mem_mib": 10.0,
            "mfu": 0.1, "expert_kernels": True, "layer_norm_kernels": ln,
            "bias_grad_epilogue": epilogue, "cuda_graph": graph,
            **({"fast_path_calls": calls} if calls is not None else {})}


def table_of(tmp_path, rows):
    (tmp_path / "ours.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "peer.jsonl").write_text("")
    return table_rows(subprocess.run(
        ["python3", str(ROOT / "bench" / "compare_table.py"), tmp_path / "ours.jsonl",
         tmp_path / "peer.jsonl"], capture_output=True, text=True, check=True).stdout)


def test_each_row_is_compared_with_the_dense_row_taken_the_same_way(tmp_path):
    rows = table_of(tmp_path, [
        our_row("dense", 100.0), our_row("dense", 80.0, ln=False),
        our_row("dense", 50.0, epilogue=False), our_row("dense", 120.0, graph=True),
        our_row("mb", 90.0), our_row("mb", 72.0, ln=False), our_row("mb", 45.0, epilogue=False),
        our_row("mb", 108.0, graph=True)])
    assert [r["× our dense"] for r in rows] == ["1.000"] * 4 + ["0.900"] * 4
    assert [r["Δ ms vs our dense"] for r in rows[4:]] == \
        [f"{800 / a - 800 / b:+.2f}" for a, b in ((90, 100), (72, 80), (45, 50), (108, 120))]
    assert all(r["× peer compiled dense"] == "–" for r in rows)


def test_a_row_that_fell_back_or_missed_a_path_says_which(tmp_path):
    def calls(expert, layer_norm, epilogue):
        return {"expert_kernels": dict(zip(("taken", "fell_back"), expert)),
                "layer_norm_kernels": dict(zip(("taken", "fell_back"), layer_norm)),
                "bias_grad_epilogue": dict(zip(("taken", "fell_back"), epilogue))}
    rows = table_of(tmp_path, [
        our_row("dense", 100.0, calls=calls((0, 0), (24, 3), (0, 48))),
        our_row("dense", 100.0, calls=calls((0, 0), (0, 0), (50, 0))),
        our_row("mb", 100.0, calls=calls((0, 0), (25, 0), (50, 0))),
        our_row("mb", 100.0, ln=False, calls=calls((120, 0), (0, 0), (50, 0))),
        our_row("dense", 100.0)])
    assert rows[0]["fallbacks"] == "layer_norm_kernels 3, bias_grad_epilogue 48"
    # A dense step takes no expert kernels: only the LayerNorm switched on and never taken.
    assert rows[1]["fallbacks"] == "layer_norm_kernels not taken"
    assert rows[2]["fallbacks"] == "expert_kernels not taken"
    assert rows[3]["fallbacks"] == "0"
    assert rows[4]["fallbacks"] == "–"  # a line from before the counters
