"""Data parallelism on c10d (Gloo, CPU) launched as PyTorch users launch it: torchrun from the
venv, or the same environment variables set by hand. K ranks at batch B must train as one
process at batch K·B; a rank that dies or hangs must end the others with an error naming it;
ranks given different configs must refuse; a 2-rank run killed and resumed must end exactly as
the uninterrupted one."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_idx

TORCHRUN = pathlib.Path(sys.executable).parent / "torchrun"
# A small ViT over 256 training images: 4 global batches of 64 per epoch, 2 epochs.
SMALL = ["model.depth=2", "model.embed_dim=32", "model.num_heads=2", "train.epochs=2",
         "train.log_every=1", "train.threads=1", "train.tensorboard=false"]
# 8 AdamW steps at lr 2e-3: splitting the batch changes the float32 rounding of the gradient
# (about 1e-7 relative), which Adam's normalisation can amplify where a gradient is near zero.
# Measured: 4e-6 at most (AMD EPYC, AVX2). 1e-4 is 25 times that and still 20 times below a
# single step's update (lr), so a gradient averaged wrongly (or not at all) cannot pass.
WEIGHT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 256), ("t10k", 40)):
        write_idx(path / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, size=(count, 28, 28)))
        write_idx(path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=count))
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(cli, data_dir, out, sets):
    args = [str(cli), "train", "--data", str(data_dir), "--out", str(out)]
    for item in SMALL + sets:
        args += ["--set", item]
    return args


def torchrun(cli, data_dir, out, sets, ranks=2, env=None, check=True):
    command = [str(TORCHRUN), f"--nproc-per-node={ranks}", "--master-addr=127.0.0.1",
               f"--master-port={free_port()}", "--no-python"]
    args = (command + train_args(cli, data_dir, out, sets) if out is not None
            else command + [str(cli)] + sets)
    result = subprocess.run(args, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def launch_by_hand(cli, data_dir, outs, sets_per_rank, env_per_rank, timeout_s):
    """The ranks as separate processes with torchrun's variables; returns (code, stderr, s)
    per rank, killing those still running `timeout_s` after the start."""
    port = free_port()
    processes = []
    for rank, (out, sets, extra) in enumerate(zip(outs, sets_per_rank, env_per_rank)):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **extra}
        processes.append(subprocess.Popen(train_args(cli, data_dir, out, sets), env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    start = time.monotonic()
    results = []
    for process in processes:
        try:
            _, err = process.communicate(timeout=max(0.1, start + timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        results.append((process.returncode, err, time.monotonic() - start))
    return results


def model_tensors(run):
    return {k: v for k, v in load_file(str(run / "state.safetensors")).items()
            if k.startswith("model.")}


def train_lines(run):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line.get("event") == "train"]


def logged_without_times(run):
    """The train and eval lines; wall-clock readings differ between any two runs."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kept = [line for line in lines if line.get("event") in ("train", "eval")]
    for line in kept:
        line.pop("images_per_s", None)
        line.pop("elapsed_s", None)
    return kept


def summary_without_times(run):
    summary = json.loads((run / "summary.json").read_text())
    for key in ("train_seconds", "eval_seconds", "run_dir"):
        summary.pop(key)
    summary["data_parallel"].pop("gradient_allreduce_ms")
    return summary


KINDS = {
    "dense": ["ffn.kind=dense"],
    "sw": ["ffn.kind=exfusion", "ffn.variant=sw"],
    "dw": ["ffn.kind=exfusion", "ffn.variant=dw"],
    "mb": ["ffn.kind=exfusion", "ffn.variant=mb"],
    "mb-unfactored": ["ffn.kind=exfusion", "ffn.variant=mb", "train.expert_kernels=false"],
    "moe": ["ffn.kind=moe"],
    # The partition is drawn over the global batch on every rank; Eq. (6) runs on every rank.
    # Experts drawn apart and pulled together slowly: a token in another group than one
    # process's would give another loss (copies would hide it, being nearly equal throughout).
    "ewa": ["ffn.kind=ewa", "ffn.expert_init=independent", "ffn.share_rate=0.05"],
    "ewa-sample": ["ffn.kind=ewa", "ffn.partition=sample", "ffn.expert_init=independent",
                   "ffn.share_rate=0.05"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_train_as_one_process_with_the_global_batch(exfusion_cli, data_dir, tmp_path,
                                                               kind):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(train_args(exfusion_cli, data_dir, one,
                              KINDS[kind] + ["train.batch_size=64"]), check=True,
                   capture_output=True)
    torchrun(exfusion_cli, data_dir, two, KINDS[kind] + ["train.batch_size=32"])

    reference, parallel = model_tensors(one), model_tensors(two)
    assert reference.keys() == parallel.keys()
    for name, tensor in reference.items():
        difference = (tensor.double() - parallel[name].double()).abs().max().item()
        assert difference <= WEIGHT_TOLERANCE, (name, difference)
    summary = json.loads((two / "summary.json").read_text())
    dp = summary["data_parallel"]
    assert dp["world_size"] == 2 and dp["backend"] == "gloo" and dp["global_batch"] == 64
    # Every rank's weights (memory banks included) are bit for bit rank 0's.
    assert dp["replicas"] == {"identical": True, "differs": []}
    assert dp["gradient_bytes"] > 0 and dp["gradient_allreduce_ms"] > 0
    # The logged loss is the global batch's, step by step.
    one_lines, two_lines = train_lines(one), train_lines(two)
    assert [l["step"] for l in two_lines] == list(range(1, 9))
    for a, b in zip(one_lines, two_lines):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a["step"], a, b)
        assert a["accuracy"] == b["accuracy"]
    # Evaluation covers the whole test set across the ranks' shards: at most one of the 40
    # predictions may flip with weights this close.
    reference_summary = json.loads((one / "summary.json").read_text())
    assert abs(summary["test_accuracy"] - reference_summary["test_accuracy"]) <= 1 / 40 + 1e-9
    if kind.startswith("mb"):
        banks = [k for k in reference if k.endswith(".bank")]
        assert banks
        for name in banks:
            assert torch.allclose(reference[name], parallel[name], atol=1e-6, rtol=0), name


def test_ranks_with_different_configs_refuse_naming_the_key(exfusion_cli, data_dir, tmp_path):
    results = launch_by_hand(
        exfusion_cli, data_dir, [tmp_path / "run", tmp_path / "run"],
        [["train.seed=1"], ["train.seed=2"]], [{}, {}], timeout_s=120)
    (code0, err0, _), (code1, err1, _) = results
    assert code1 == 2, err1
    assert "train.seed" in err1 and "rank 0" in err1, err1
    assert code0 == 2, err0
    assert "rank 1" in err0 and "train.seed" in err0, err0
    assert not (tmp_path / "run").exists()


def test_a_killed_rank_ends_the_others_naming_it(exfusion_cli, data_dir, tmp_path):
    timeout_s = 60
    results = launch_by_hand(
        exfusion_cli, data_dir, [tmp_path / "run", tmp_path / "run"],
        [[f"train.dist_timeout_s={timeout_s}", "train.batch_size=32"]] * 2,
        [{}, {"EXFUSION_KILL_AT": "step:3"}], timeout_s=timeout_s + 60)
    (code0, err0, seconds0), (code1, _, _) = results
    assert code1 == -signal.SIGKILL
    assert code0 == 3, err0
    assert "rank 1 has stopped" in err0, err0
    # A dead peer is seen at once (its connections close), well before the timeout.
    assert seconds0 < timeout_s, seconds0


def test_a_hung_rank_ends_the_others_within_the_timeout(exfusion_cli, data_dir, tmp_path):
    timeout_s = 5
    # launch_by_hand waits for rank 0 first, then kills the stopped rank 1 at its timeout.
    results = launch_by_hand(
        exfusion_cli, data_dir, [tmp_path / "run", tmp_path / "run"],
        [[f"train.dist_timeout_s={timeout_s}", "train.batch_size=32"]] * 2,
        [{}, {"EXFUSION_KILL_AT": "step:3:STOP"}], timeout_s=timeout_s + 20)
    (code0, err0, seconds0), (code1, _, _) = results
    assert code0 == 3, err0
    assert "rank 1 has stopped" in err0, err0
    # The collective waits train.dist_timeout_s, then the heartbeat check takes a moment.
    assert timeout_s <= seconds0 < timeout_s + 30, seconds0
    assert code1 == -signal.SIGKILL  # the stopped rank, killed by the helper's timeout


def test_a_killed_two_rank_run_resumes_exactly(exfusion_cli, data_dir, tmp_path):
    sets = KINDS["mb"] + ["train.batch_size=32", "train.checkpoint_every=3"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    torchrun(exfusion_cli, data_dir, whole, sets)
    # Both ranks killed inside their 5th step: the newest checkpoint is step 3's.
    result = torchrun(exfusion_cli, data_dir, killed, sets, env={"EXFUSION_KILL_AT": "step:5"},
                      check=False)
    assert result.returncode != 0
    assert not (killed / "summary.json").exists()

    # Resuming with another world size is refused, naming both.
    refused = subprocess.run([str(exfusion_cli), "train", "--resume", str(killed)],
                             capture_output=True, text=True)
    assert refused.returncode == 2, refused.stderr
    assert "2 data-parallel rank(s)" in refused.stderr and "this run has 1" in refused.stderr

    torchrun(exfusion_cli, data_dir, None, ["train", "--resume", str(killed)])
    reference, resumed = (load_file(str(run / "state.safetensors")) for run in (whole, killed))
    assert reference.keys() == resumed.keys()
    for name, tensor in reference.items():
        if name != "trainer.progress":  # it holds the wall-clock times
            assert torch.equal(tensor, resumed[name]), name
    for name in ("model.safetensors", "model.json"):
        assert (whole / name).read_bytes() == (killed / name).read_bytes(), name
    assert summary_without_times(whole) == summary_without_times(killed)
    assert logged_without_times(whole) == logged_without_times(killed)
    assert [l["step"] for l in train_lines(killed)] == list(range(1, 9))


def test_a_signal_to_one_rank_stops_every_rank_at_one_step(exfusion_cli, data_dir, tmp_path):
    run = tmp_path / "run"
    sets = ["train.batch_size=32", "train.dist_timeout_s=60"]
    results = launch_by_hand(exfusion_cli, data_dir, [run, run], [sets, sets],
                             [{}, {"EXFUSION_KILL_AT": "step:3:TERM"}], timeout_s=120)
    (code0, err0, _), (code1, err1, _) = results
    # Both end as a SIGTERM'd run does (128 + 15), at the same step, rank 0 having written its
    # checkpoint there (after the epoch-end one of step 4, if the agreed step lies past it).
    assert code1 == 128 + signal.SIGTERM, err1
    assert code0 == 128 + signal.SIGTERM, err0
    assert "--resume" in err0, err0
    steps = sorted(load_file(str(path))["trainer.step"].item()
                   for path in (run / "checkpoints").glob("step-*.safetensors"))
    assert steps and 3 <= steps[-1] < 8, steps
    assert not (run / "summary.json").exists()
    torchrun(exfusion_cli, data_dir, None, ["train", "--resume", str(run)])
    assert [l["step"] for l in train_lines(run)] == list(range(1, 9))


def test_a_refusal_on_rank_0_ends_every_rank(exfusion_cli, data_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}\n")  # an earlier run's: refused without --force
    results = launch_by_hand(exfusion_cli, data_dir, [run, run], [[], []], [{}, {}],
                             timeout_s=120)
    (code0, err0, _), (code1, err1, seconds1) = results
    assert code0 == 2 and "--force" in err0, err0
    assert code1 == 2, err1
    assert "rank 0 of 2 could not open the run directory" in err1, err1
    assert seconds1 < 60
    assert (run / "config.json").read_text() == "{}\n"


@pytest.mark.parametrize("kind", ["dense", "mb", "moe"])
def test_accumulated_steps_on_two_ranks_train_as_one_process(exfusion_cli, data_dir, tmp_path,
                                                              kind):
    # Each step sums two batches: the ranks' k-th batches of 32 are one process's k-th of 64,
    # and only a step's last batch averages the gradients across the ranks (ExFusion-mb's
    # factored dW̄ of the first batch and the second batch's ordinary gradient both).
    one, two = tmp_path / "one", tmp_path / "two"
    accumulated = KINDS[kind] + ["train.accumulation_steps=2"]
    subprocess.run(train_args(exfusion_cli, data_dir, one, accumulated + ["train.batch_size=64"]),
                   check=True, capture_output=True)
    torchrun(exfusion_cli, data_dir, two, accumulated + ["train.batch_size=32"])

    reference, parallel = model_tensors(one), model_tensors(two)
    assert reference.keys() == parallel.keys()
    for name, tensor in reference.items():
        difference = (tensor.double() - parallel[name].double()).abs().max().item()
        assert difference <= WEIGHT_TOLERANCE, (name, difference)
    # 256 images, 4 batches of 64 per epoch, 2 per step, 2 epochs.
    one_lines, two_lines = train_lines(one), train_lines(two)
    assert [l["step"] for l in two_lines] == [1, 2, 3, 4]
    for a, b in zip(one_lines, two_lines):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a["step"], a, b)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["data_parallel"]["replicas"] == {"identical": True, "differs": []}
