"""The TensorBoard event files `exfusion train` writes, read back with TensorBoard's own
EventAccumulator and record by record: every scalar equals its metrics.jsonl value (tag = JSON
path) at the same step, and a run killed and resumed logs each step's scalars exactly once."""
import json
import os
import struct
import subprocess

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from conftest import run_cli

# 96 training images in batches of 16: 6 steps an epoch, 2 epochs, a window every 2 steps.
TINY = ["--threads", "1", "--set", "model.embed_dim=16", "model.depth=2", "model.num_heads=2",
        "train.batch_size=16", "train.epochs=2", "train.log_every=2"]
TRAIN_KEYS = ("loss", "accuracy", "lr", "images_per_s")
MODEL_GROUPS = ("fusion_weights", "routing")
SUMMARY_KEYS = ("test_accuracy", "test_loss", "fused_test_accuracy", "fused_test_loss")


def flatten(tag, value, out):
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{tag}/{key}", item, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            flatten(f"{tag}/{i}", item, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[tag] = value


def expected_scalars(run):
    """{tag: [(step, value)]} from metrics.jsonl, the way the run's TensorBoard file has them."""
    scalars = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        values = {}
        if record["event"] == "train":
            for key in TRAIN_KEYS:
                values[f"train/{key}"] = record[key]
            for group in MODEL_GROUPS:
                if group in record:
                    flatten(group, record[group], values)
            step = record["step"]
        elif record["event"] == "eval":
            values = {"eval/test_accuracy": record["test_accuracy"],
                      "eval/test_loss": record["test_loss"]}
            step = record["step"]
        elif record["event"] == "summary":
            summary = record["summary"]
            values = {f"summary/{k}": summary[k] for k in SUMMARY_KEYS if k in summary}
            step = summary["steps"]
        for tag, value in values.items():
            scalars.setdefault(tag, []).append((step, value))
    return scalars


def event_files(run):
    return sorted((run / "tb").glob("events.out.tfevents.*"))


def read_scalars(run):
    """{tag: [(step, value)]} through TensorBoard's EventAccumulator, keeping every event
    (no purge of steps that go back, no sampling), so a duplicate would show."""
    files = event_files(run)
    assert len(files) == 1, files
    accumulator = EventAccumulator(str(files[0]), size_guidance={"scalars": 0},
                                   purge_orphaned_data=False)
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def read_records(path):
    """Each TFRecord of the file, its framing and CRCs checked, as an Event; each record's
    bytes are the ones protobuf's serializer writes for that Event."""
    data = path.read_bytes()
    events, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert length_crc == masked_crc32c(header)
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert body_crc == masked_crc32c(body)
        event = event_pb2.Event.FromString(body)
        assert event.SerializeToString() == body
        events.append(event)
        pos += 16 + length
    assert pos == len(data)
    return events


def assert_matches_metrics(run):
    expected = expected_scalars(run)
    got = read_scalars(run)
    assert sorted(got) == sorted(expected)
    for tag, values in expected.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in values], tag
        for (_, want), (_, have) in zip(values, got[tag]):
            assert np.float32(have) == np.float32(want), (tag, want, have)
    events = read_records(event_files(run)[0])
    assert events[0].file_version == "brain.Event:2"
    assert sum(len(e.summary.value) for e in events[1:]) == sum(map(len, expected.values()))
    return got


def train(cli, data, run, *settings, env=None):
    return subprocess.run([str(cli), "train", "--data", str(data), "--out", str(run), *TINY,
                           *settings], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("ffn", [["dense"], ["exfusion", "ffn.variant=mb"],
                                 ["moe", "ffn.num_experts=4", "ffn.top_k=2"]],
                         ids=["dense", "exfusion-mb", "moe"])
def test_event_file_matches_metrics_jsonl(exfusion_cli, toy_idx_dir, tmp_path, ffn):
    run = tmp_path / "run"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, *TINY,
            f"ffn.kind={ffn[0]}", *ffn[1:])
    name = event_files(run)[0].name.split(".")
    assert name[:3] == ["events", "out", "tfevents"] and name[3].isdigit()
    got = assert_matches_metrics(run)
    assert [s for s, _ in got["train/loss"]] == [2, 4, 6, 8, 10, 12]
    assert [s for s, _ in got["eval/test_accuracy"]] == [6, 12]
    assert [s for s, _ in got["summary/test_accuracy"]] == [12]
    tags = set(got)
    if ffn[0] == "exfusion":
        # The memory bank's m: one weight per expert and block.
        assert {t for t in tags if t.startswith("fusion_weights/")} == {
            f"fusion_weights/blocks.{block}/m/{e}" for block in range(2) for e in range(4)}
        assert "summary/fused_test_accuracy" in tags
    else:
        assert not any(t.startswith("fusion_weights/") for t in tags)
    if ffn[0] == "moe":
        for block in range(2):
            assert {f"routing/blocks.{block}/dropped_fraction",
                    f"routing/blocks.{block}/aux_loss"} <= tags
        assert "summary/fused_test_accuracy" not in tags
    else:
        assert not any(t.startswith("routing/") for t in tags)


def test_killed_and_resumed_run_logs_every_step_once(exfusion_cli, toy_idx_dir, tmp_path):
    reference = tmp_path / "reference"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", reference, *TINY,
            "train.checkpoint_every=3")
    run = tmp_path / "run"
    # Killed inside step 5 (the checkpoint of step 3 came before step 4's window was logged),
    # then inside the resumed run's first evaluation (step 6's window logged and checkpointed).
    env = dict(os.environ, EXFUSION_KILL_AT="step:5")
    killed = train(exfusion_cli, toy_idx_dir, run, "train.checkpoint_every=3", env=env)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    env["EXFUSION_KILL_AT"] = "eval:1"
    killed = subprocess.run([str(exfusion_cli), "train", "--resume", str(run)],
                            capture_output=True, text=True, env=env)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    run_cli(exfusion_cli, "train", "--resume", run)
    got = assert_matches_metrics(run)
    want = read_scalars(reference)
    assert sorted(got) == sorted(want)
    for tag in want:
        if tag == "train/images_per_s":
            continue  # a wall-clock reading
        assert got[tag] == want[tag], tag


def test_forced_rerun_removes_the_old_event_files(exfusion_cli, toy_idx_dir, tmp_path):
    run = tmp_path / "run"
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, *TINY)
    assert len(event_files(run)) == 1
    run_cli(exfusion_cli, "train", "--data", toy_idx_dir, "--out", run, "--force", *TINY,
            "train.tensorboard=false")
    assert not (run / "tb").exists()
    assert (run / "summary.json").exists()
