"""scripts/steps_to_reach.py on a sweep directory laid out as `exfusion sweep` writes it, with
curves whose answers are known: the step at which each configuration's mean over seeds first
reaches the baseline's final loss, the speedup, null where it never does, and a clear error."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "steps_to_reach.py"


def write_run(directory, eval_losses, train_losses):
    directory.mkdir(parents=True)
    lines = [{"event": "train", "step": 10 * (i + 1), "loss": loss}
             for i, loss in enumerate(train_losses)]
    lines += [{"event": "eval", "step": 20 * (i + 1), "test_loss": loss}
              for i, loss in enumerate(eval_losses)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_steps_and_speedups_from_the_mean_over_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    # dense ends at validation 3.0 (mean of 2.9 and 3.1) at step 80; fast reaches 3.0 at step 40
    # (mean of 3.1 and 2.9 there); slow never does.
    write_run(sweep / "runs/dense/seed-1", [5, 4, 3.5, 2.9], [6, 5, 4, 3, 3, 3, 3, 3])
    write_run(sweep / "runs/dense/seed-2", [5, 4, 3.5, 3.1], [6, 5, 4, 3, 3, 3, 3, 3])
    write_run(sweep / "runs/fast/seed-1", [4, 3.1, 2.5, 2.0], [5, 3, 3, 3, 3, 3, 3, 2])
    write_run(sweep / "runs/fast/seed-2", [4, 2.9, 2.5, 2.0], [5, 3, 3, 3, 3, 3, 3, 2])
    write_run(sweep / "runs/slow/seed-1", [6, 5, 4, 3.5], [7, 6, 6, 6, 6, 6, 6, 6])
    (sweep / "results.json").write_text(json.dumps([
        {"configuration": "dense", "baseline": True},
        {"configuration": "fast", "baseline": False},
        {"configuration": "slow", "baseline": False}]))
    done = subprocess.run([sys.executable, str(SCRIPT), str(sweep), "--window", "1"],
                          capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["baseline"] == "dense"
    assert out["validation_target"] == 3.0
    rows = out["configurations"]
    assert rows["dense"]["validation_steps_to_target"] == 80
    assert rows["fast"]["validation_steps_to_target"] == 40
    assert rows["fast"]["validation_speedup"] == 2.0
    assert rows["slow"]["validation_steps_to_target"] is None
    assert rows["slow"]["seeds"] == 1
    # Training loss, unsmoothed: dense's last window is 3 (step 80); fast is at 3 from step 20.
    assert rows["fast"]["train_steps_to_target"] == 20
    assert rows["fast"]["train_speedup"] == 4.0


def test_a_directory_that_is_no_sweep_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert "results.json: no such file" in done.stderr
