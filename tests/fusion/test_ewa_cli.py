"""EWA through the CLI: a run logs each layer's expert spread and fuses into the model it
evaluated (fused = trained); `info` shows the spread per layer; `upcycle --to ewa` starts from a
dense run's logits; a sweep names EWA beside ExFusion and compares with both baselines; the
options' mistakes are refused, naming the key."""
import json
import subprocess

import pytest

from conftest import our_logits, run_cli

SMALL = ["--threads", "1", "--set", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
         "train.batch_size=16", "train.epochs=2", "train.log_every=2", "train.tensorboard=false"]
# Same weights, two GEMM paths (the mean's linear layers in the unfused model and the fused
# model's): float32 rounding of O(1) logits.
SAME_LOGITS = 1e-5


def train(cli, data, out, *sets):
    run_cli(cli, "train", "--data", data, "--out", out, "--ffn", "ewa", *SMALL, *sets)
    return out


def test_a_run_logs_the_spread_and_fuses_into_what_it_evaluated(exfusion_cli, toy_idx_dir,
                                                                 tmp_path):
    run = train(exfusion_cli, toy_idx_dir, tmp_path / "run", "ffn.share_rate=0.1")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fused_max_abs_logit_diff"] <= SAME_LOGITS
    assert summary["params_fused"] < summary["params_train"]
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if l.get("event") == "train"]
    assert steps
    for line in steps:
        spread = line["expert_spread"]
        assert set(spread) == {"blocks.0", "blocks.1"}, spread
        for layer in spread.values():
            # Copies at the start, apart only by their groups' gradients, pulled together each
            # step: apart, and far closer than independent draws (spread ≈ 1).
            assert set(layer) == {"fc1", "fc2"}
            assert 0 < layer["fc1"] < 0.5 and 0 < layer["fc2"] < 0.5, layer
    # The unfused training state evaluates as the fused export.
    unfused = our_logits(exfusion_cli, run / "state.safetensors", tmp_path, "--unfused")
    fused = our_logits(exfusion_cli, run, tmp_path)
    assert (unfused["logits"] - fused["logits"]).abs().max().item() <= SAME_LOGITS

    info = json.loads(run_cli(exfusion_cli, "info", run / "state.safetensors", "--json"))
    assert set(info["expert_spread"]) == {"blocks.0", "blocks.1"}
    assert info["architecture"]["ffn"]["kind"] == "ewa"
    page = run_cli(exfusion_cli, "info", run / "state.safetensors")
    assert "fc1 " in page and "ewa" in page, page


def test_a_larger_share_rate_keeps_the_experts_closer(exfusion_cli, toy_idx_dir, tmp_path):
    def last_spread(beta):
        run = train(exfusion_cli, toy_idx_dir, tmp_path / f"b{beta}", f"ffn.share_rate={beta}")
        lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        return [l for l in lines if l.get("event") == "train"][-1]["expert_spread"]["blocks.0"]
    # β = 0.5 shrinks each deviation to 1/3 per step, β = 0.05 to 0.93: at a steady state the
    # spread scales roughly with 1/(1 − keep), a factor of ~10 here; 2 leaves a wide margin.
    loose, tight = last_spread(0.05), last_spread(0.5)
    assert tight["fc1"] * 2 < loose["fc1"], (tight, loose)
    # β = (N − 1)/N: every expert is the mean after each step.
    assert last_spread(0.75)["fc1"] <= 1e-6


def test_upcycled_from_a_dense_run_it_starts_at_the_dense_logits(exfusion_cli, toy_idx_dir,
                                                                 tmp_path):
    dense = tmp_path / "dense"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", dense, "--ffn", "dense",
            *SMALL)
    start = tmp_path / "ewa-start"
    run_cli(exfusion_cli, "upcycle", dense, "--to", "ewa", "--out", start)
    dense_logits = our_logits(exfusion_cli, dense, tmp_path)
    upcycled = our_logits(exfusion_cli, start / "init.safetensors", tmp_path, "--unfused")
    assert (dense_logits["logits"] - upcycled["logits"]).abs().max().item() <= SAME_LOGITS


@pytest.mark.parametrize("setting, key", [("ffn.num_experts=1", "num_experts"),
                                          ("ffn.share_rate=1.5", "share_rate"),
                                          ("ffn.partition=image", "partition")])
def test_a_bad_option_is_refused_naming_it(exfusion_cli, toy_idx_dir, tmp_path, setting, key):
    result = subprocess.run([str(exfusion_cli), "train", "--data", str(toy_idx_dir), "--out",
                             str(tmp_path / "run"), "--ffn", "ewa", "--set", setting],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert f"ffn.{key}" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_a_sweep_compares_every_row_with_dense_and_with_ewa(exfusion_cli, toy_idx_dir, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("\n".join([
        "set: {model.embed_dim: 16, model.depth: 1, model.num_heads: 2, train.batch_size: 32,",
        "      train.epochs: 1, train.threads: 1, train.tensorboard: false}",
        "seeds: 2",
        "baseline: dense",
        "compare_also: [ewa]",
        "configurations:",
        "  - {name: dense, set: {ffn.kind: dense}}",
        "  - {name: ewa, set: {ffn.kind: ewa}}",
        "  - {name: sw, set: {ffn.kind: exfusion, ffn.variant: sw}}",
        ""]))
    out = tmp_path / "out"
    run_cli(exfusion_cli, "sweep", sweep, "--out", out, "--data", toy_idx_dir)
    rows = {r["configuration"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows["ewa"]["compared_with"] == "dense" and "p_welch" in rows["ewa"]
    assert rows["ewa"]["compared_also"] == {"ewa": {}}
    versus_ewa = rows["sw"]["compared_also"]["ewa"]
    assert versus_ewa["delta"] == pytest.approx(
        rows["sw"]["accuracy_mean"] - rows["ewa"]["accuracy_mean"], abs=1e-9)
    if "p_welch" in versus_ewa:  # undefined where both sides' 2 seeds tie (no variance)
        assert 0 <= versus_ewa["p_welch"] <= 1
    # The seeds a side a gap of sw's size would need (2 seeds each side here: defined unless
    # both sides tie).
    if "p_welch" in rows["sw"]:
        assert rows["sw"]["seeds_for_80pct_power"] >= 2
    table = (out / "table.md").read_text()
    assert "| p (Welch) | seeds for 80 % power | Δ vs ewa | p vs ewa |" in table
    assert "(itself)" in table
    header = (out / "table.csv").read_text().splitlines()[0]
    assert "delta_vs_ewa,p_welch_vs_ewa" in header
