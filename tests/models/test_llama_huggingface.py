"""Llama exports load into transformers' LlamaForCausalLM unchanged and give our logits; a
directory transformers writes imports as a dense Llama with transformers' logits.

A tiny Llama (grouped-query attention: 4 query heads over 2 key/value heads) is trained a few
steps through the CLI as a causal language model on a made-up corpus (dense, and ExFusion-mb in
every FFN, fused; untied and tied lm_head), its hf/ directory loaded with from_pretrained (no
missing or unexpected keys) and run on the validation samples `exfusion eval --save-logits` saved
with their inputs; max abs logit difference <= 1e-4 (fp32, CPU)."""
import json
import subprocess

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import our_logits, run_cli

LOGIT_TOLERANCE = 1e-4
SEQUENCE_LENGTH = 48


@pytest.fixture(scope="module")
def tokenizer(exfusion_cli, text_corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    run_cli(exfusion_cli, "tokenizer", "train", str(text_corpus / "*.jsonl"), "--vocab-size", 360,
            "--out", path)
    return path


def data_section(text_corpus, tokenizer):
    return {"train": str(text_corpus / "*.jsonl"), "tokenizer": str(tokenizer),
            "validation_share": 0.05, "validation_samples": 16, "samples_per_epoch": 64}


def model_section(tied=False):
    return {"kind": "llama", "vocab_size": 384, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "rope_theta": 500.0, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": tied, "sequence_length": SEQUENCE_LENGTH}


def train(cli, tmp_path, text_corpus, tokenizer, ffn, tied=False):
    config = {
        "task": "causal_lm",
        "model": model_section(tied),
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
        return model(input_ids=saved["inputs"]).logits


@pytest.mark.parametrize("ffn,tied", [({"kind": "dense"}, False),
                                      ({"kind": "exfusion", "variant": "mb", "num_experts": 3},
                                       False),
                                      ({"kind": "dense"}, True)],
                         ids=["dense", "exfusion-mb", "dense-tied"])
def test_export_loads_into_transformers(exfusion_cli, text_corpus, tokenizer, tmp_path, ffn, tied):
    run = train(exfusion_cli, tmp_path, text_corpus, tokenizer, ffn, tied)
    export = run / "hf"
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.model"):
        assert (export / name).exists(), name
    assert (export / "tokenizer.model").read_bytes() == tokenizer.read_bytes()
    model, info = LlamaForCausalLM.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    model.eval()
    saved = our_logits(exfusion_cli, run, tmp_path)
    assert saved["inputs"].shape[1] == SEQUENCE_LENGTH
    theirs = transformers_logits(model, saved)
    assert theirs.shape == saved["logits"].shape
    diff = (theirs - saved["logits"]).abs().max().item()
    print(f"{ffn['kind']} tied={tied}: max abs logit difference {diff:.3e} "
          f"(logits up to {saved['logits'].abs().max().item():.2f})")
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def test_transformers_directory_imports(exfusion_cli, text_corpus, tokenizer, tmp_path):
    """A Llama that transformers initialised and saved (its own file, no metadata of ours)
    imports as a dense start with transformers' logits."""
    settings = {key: value for key, value in model_section().items()
                if key not in ("kind", "sequence_length")}
    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(**settings)).eval()
    source = tmp_path / "transformers-llama"
    model.save_pretrained(source)
    imported = tmp_path / "imported.safetensors"
    data = data_section(text_corpus, tokenizer)
    result = json.loads(run_cli(
        exfusion_cli, "import", source, "--out", imported, "--set", "task=causal_lm",
        f"model.sequence_length={SEQUENCE_LENGTH}",
        *[f"data.{key}={value}" for key, value in data.items()]))
    assert result["from"] == "huggingface"
    assert result["params"] == sum(p.numel() for p in model.parameters())
    saved = our_logits(exfusion_cli, imported, tmp_path)
    diff = (transformers_logits(model, saved) - saved["logits"]).abs().max().item()
    print(f"import: max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def test_an_unsupported_architecture_is_refused_by_name(exfusion_cli, tmp_path):
    """A Llama with biases in its attention is another model: one message naming the key and
    what is supported, exit code 2, nothing written."""
    settings = {key: value for key, value in model_section().items()
                if key not in ("kind", "sequence_length")}
    LlamaForCausalLM(LlamaConfig(**settings, attention_bias=True)).save_pretrained(
        tmp_path / "biased")
    out = tmp_path / "out.safetensors"
    result = subprocess.run([str(exfusion_cli), "import", str(tmp_path / "biased"), "--out",
                             str(out)], capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "attention_bias" in result.stderr, result.stderr
    assert not out.exists()
