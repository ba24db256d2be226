"""T5 exports load into transformers' T5ForConditionalGeneration unchanged and give our logits;
a directory transformers writes imports as a dense T5 with transformers' logits.

A tiny T5 is trained a few steps through the CLI on a made-up corpus (dense, and ExFusion-mb in
every FFN of both stacks, fused), its hf/ directory loaded with from_pretrained (no missing or
unexpected keys) and run on the validation samples `exfusion eval --save-logits` saved with their
inputs; max abs logit difference <= 1e-4 (fp32, CPU)."""
import json

import pytest
import torch
from transformers import T5ForConditionalGeneration

from conftest import our_logits, run_cli

LOGIT_TOLERANCE = 1e-4
INPUT_LENGTH, TARGET_LENGTH = 64, 14  # nanoT5's lengths at 64 inputs


@pytest.fixture(scope="module")
def tokenizer(exfusion_cli, text_corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer") / "spiece.model"
    run_cli(exfusion_cli, "tokenizer", "train", str(text_corpus / "*.jsonl"), "--vocab-size", 360,
            "--out", path)
    return path


def data_section(text_corpus, tokenizer):
    return {"train": str(text_corpus / "*.jsonl"), "tokenizer": str(tokenizer),
            "validation_share": 0.05, "validation_samples": 16, "samples_per_epoch": 64}


def train(cli, tmp_path, text_corpus, tokenizer, ffn):
    config = {
        "task": "span_corruption",
        "model": {"kind": "t5", "vocab_size": 512, "d_model": 32, "d_kv": 8, "d_ff": 48,
                  "num_heads": 4, "num_layers": 2, "num_decoder_layers": 3,
                  "input_length": INPUT_LENGTH, "target_length": TARGET_LENGTH},
        "ffn": ffn,
        "data": data_section(text_corpus, tokenizer),
        "train": {"batch_size": 8, "epochs": 1, "max_steps": 4, "lr": 3e-3, "seed": 4},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    run = tmp_path / "run"
    run_cli(cli, "train", "--config", tmp_path / "config.json", "--out", run, "--threads", "1")
    return run



def transformers_logits(model, saved):
    with torch.no_grad():
        return model(input_ids=saved["inputs"], decoder_input_ids=saved["decoder_inputs"]).logits


@pytest.mark.parametrize("ffn", [{"kind": "dense"},
                                 {"kind": "exfusion", "variant": "mb", "num_experts": 3}],
                         ids=["dense", "exfusion-mb"])
def test_export_loads_into_transformers(exfusion_cli, text_corpus, tokenizer, tmp_path, ffn):
    run = train(exfusion_cli, tmp_path, text_corpus, tokenizer, ffn)
    export = run / "hf"
    for name in ("config.json", "generation_config.json", "model.safetensors", "spiece.model"):
        assert (export / name).exists(), name
    assert (export / "spiece.model").read_bytes() == tokenizer.read_bytes()
    model, info = T5ForConditionalGeneration.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    model.eval()
    saved = our_logits(exfusion_cli, run, tmp_path)
    assert saved["inputs"].shape[1] == INPUT_LENGTH
    theirs = transformers_logits(model, saved)
    assert theirs.shape == saved["logits"].shape
    diff = (theirs - saved["logits"]).abs().max().item()
    print(f"{ffn['kind']}: max abs logit difference {diff:.3e} "
          f"(logits up to {saved['logits'].abs().max().item():.2f})")
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def test_transformers_directory_imports(exfusion_cli, text_corpus, tokenizer, tmp_path):
    """A T5 that transformers initialised and saved (its own file, no metadata of ours) imports
    as a dense start with transformers' logits."""
    from transformers import T5Config
    config = T5Config(vocab_size=512, d_model=32, d_kv=8, d_ff=40, num_layers=2,
                      num_decoder_layers=1, num_heads=4, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0)
    torch.manual_seed(3)
    model = T5ForConditionalGeneration(config).eval()
    source = tmp_path / "transformers-t5"
    model.save_pretrained(source)
    imported = tmp_path / "imported.safetensors"
    data = data_section(text_corpus, tokenizer)
    result = json.loads(run_cli(
        exfusion_cli, "import", source, "--out", imported, "--set", "task=span_corruption",
        f"model.input_length={INPUT_LENGTH}", f"model.target_length={TARGET_LENGTH}",
        *[f"data.{key}={value}" for key, value in data.items()]))
    assert result["from"] == "huggingface"
    # transformers 5 ties lm_head to shared; ours is v1.1's own lm_head, here a copy of shared.
    assert result["params"] == sum(p.numel() for p in model.parameters()) + 512 * 32
    saved = our_logits(exfusion_cli, imported, tmp_path)
    diff = (transformers_logits(model, saved) - saved["logits"]).abs().max().item()
    print(f"import: max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def test_a_relu_t5_is_refused_by_name(exfusion_cli, tmp_path):
    from transformers import T5Config
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                      feed_forward_proj="relu")
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5-relu")
    import subprocess
    result = subprocess.run([str(exfusion_cli), "import", str(tmp_path / "t5-relu"), "--out",
                             str(tmp_path / "out.safetensors")], capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "feed_forward_proj" in result.stderr and "gated-gelu" in result.stderr, result.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_a_directory_with_a_missing_or_mismatched_file_is_refused(exfusion_cli, tmp_path):
    """No weights file, or a config.json whose sizes the weights do not have: one message naming
    the file, exit code 2, nothing written."""
    import shutil
    import subprocess
    from transformers import T5Config
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    source = tmp_path / "t5"
    T5ForConditionalGeneration(config).save_pretrained(source)

    def refused(directory):
        out = tmp_path / "out.safetensors"
        result = subprocess.run([str(exfusion_cli), "import", str(directory), "--out", str(out)],
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stdout + result.stderr
        assert not out.exists()
        return result.stderr

    no_weights = tmp_path / "no-weights"
    shutil.copytree(source, no_weights)
    (no_weights / "model.safetensors").unlink()
    message = refused(no_weights)
    assert "no-weights" in message and "model.safetensors" in message, message

    mismatched = tmp_path / "mismatched"
    shutil.copytree(source, mismatched)
    settings = json.loads((mismatched / "config.json").read_text())
    settings["d_ff"] = 32
    (mismatched / "config.json").write_text(json.dumps(settings))
    message = refused(mismatched)
    assert "wi_0" in message and "32" in message and "24" in message, message
