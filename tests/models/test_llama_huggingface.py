"""Llama exports load into transformers' LlamaForCausalLM unchanged and give our logits; a
directory transformers writes (one file, or bf16/fp16 shards with their index) imports as a
dense Llama with transformers' logits, and a damaged one is refused by name; a Llama with a
top-k mixture of experts in every layer exports (`exfusion export`) as a MixtralForCausalLM
directory in the Hub's layout that transformers loads with our logits; and DeRS compression of
such a mixture through the CLI.

A tiny Llama (grouped-query attention: 4 query heads over 2 key/value heads) is trained a few
steps through the CLI as a causal language model on a made-up corpus (dense, and ExFusion-mb in
every FFN, fused; untied and tied lm_head), its hf/ directory loaded with from_pretrained (no
missing or unexpected keys) and run on the validation samples `exfusion eval --save-logits` saved
with their inputs; max abs logit difference <= 1e-4 (fp32, CPU)."""
import json
import shutil
import subprocess

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM, MixtralForCausalLM

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


def transformers_llama(tmp_path, dtype, max_shard_size="30KB"):
    """A Llama that transformers initialised, saved in `dtype` over several shards with their
    index, and that model as float32 (the weights as the shards hold them)."""
    settings = {key: value for key, value in model_section().items()
                if key not in ("kind", "sequence_length")}
    torch.manual_seed(5)
    model = LlamaForCausalLM(LlamaConfig(**settings)).to(dtype).eval()
    source = tmp_path / f"transformers-llama-{str(dtype).split('.')[-1]}"
    model.save_pretrained(source, max_shard_size=max_shard_size)
    return source, model.float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_a_sharded_half_precision_directory_imports(exfusion_cli, text_corpus, tokenizer,
                                                    tmp_path, dtype):
    """save_pretrained's shards with their model.safetensors.index.json, in bf16 or fp16: the
    import reads every shard and gives the logits of the same weights in float32."""
    source, model = transformers_llama(tmp_path, dtype)
    shards = sorted(source.glob("model-*.safetensors"))
    assert len(shards) > 1 and (source / "model.safetensors.index.json").exists(), shards
    imported = tmp_path / "imported.safetensors"
    data = data_section(text_corpus, tokenizer)
    result = json.loads(run_cli(
        exfusion_cli, "import", source, "--out", imported, "--set", "task=causal_lm",
        f"model.sequence_length={SEQUENCE_LENGTH}",
        *[f"data.{key}={value}" for key, value in data.items()]))
    assert result["params"] == sum(p.numel() for p in model.parameters())
    saved = our_logits(exfusion_cli, imported, tmp_path)
    diff = (transformers_logits(model, saved) - saved["logits"]).abs().max().item()
    print(f"sharded {dtype}: {len(shards)} shards, max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


def break_missing_shard(source):
    sorted(source.glob("model-*.safetensors"))[-1].unlink()


def break_index_names_wrong_shard(source):
    index_path = source / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = next(key for key, shard in index["weight_map"].items() if shard == shards[0])
    index["weight_map"][name] = shards[-1]
    index_path.write_text(json.dumps(index))


def break_config_sizes(source):
    config = json.loads((source / "config.json").read_text())
    config["intermediate_size"] = 64
    (source / "config.json").write_text(json.dumps(config))


def break_architecture(source):
    config = json.loads((source / "config.json").read_text())
    config["model_type"] = "gpt2"
    (source / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage,message", [
    (break_missing_shard, ["which is not in"]),
    # The shard that lost it or the one named for it, whichever is read first.
    (break_index_names_wrong_shard, ["which does not hold it", "does not map to this shard"]),
    (break_config_sizes, ["mlp.gate_proj.weight: shape [48, 32] in file, expected [64, 32]"]),
    (break_architecture, ["supported architectures: LlamaForCausalLM"])],
    ids=["missing-shard", "index-names-wrong-shard", "config-disagrees", "architecture"])
def test_a_damaged_directory_is_refused(exfusion_cli, tmp_path, damage, message):
    """Each bad input class: one message naming the file and what differs, exit code 2,
    nothing written."""
    source, _ = transformers_llama(tmp_path, torch.bfloat16)
    damage(source)
    out = tmp_path / "out.safetensors"
    result = subprocess.run([str(exfusion_cli), "import", str(source), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert any(text in result.stderr for text in message), result.stderr
    assert not out.exists()


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


@pytest.mark.parametrize("top_k", [1, 2], ids=["top1", "top2"])
def test_mixture_exports_as_mixtral(exfusion_cli, text_corpus, tokenizer, tmp_path, top_k):
    """MoE-4-k in both layers, no token dropped (capacity_factor 0: Mixtral keeps every token),
    top-1 with its gate renormalised to 1 as Mixtral's is: the hf/ directory `exfusion export`
    writes loads into MixtralForCausalLM with no missing or unexpected keys, one matrix per
    expert under the Hub's names, and gives our logits."""
    ffn = {"kind": "moe", "num_experts": 4, "top_k": top_k, "capacity_factor": 0,
           "renormalize_top1": True}
    run = train(exfusion_cli, tmp_path, text_corpus, tokenizer, ffn)
    result = json.loads(run_cli(exfusion_cli, "export", run))
    export = run / "hf"
    assert result["format"] == "mixtral" and result["exported"] == str(export)
    with safe_open(str(export / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
        assert weights.get_tensor("model.layers.1.block_sparse_moe.experts.3.w2.weight").shape \
            == (32, 48)
    assert "model.layers.0.block_sparse_moe.gate.weight" in names
    assert not any(".mlp." in name for name in names), sorted(names)
    config = json.loads((export / "config.json").read_text())
    assert config["num_local_experts"] == 4 and config["num_experts_per_tok"] == top_k
    assert (export / "tokenizer.model").read_bytes() == tokenizer.read_bytes()
    model, info = MixtralForCausalLM.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    model.eval()
    saved = our_logits(exfusion_cli, run, tmp_path, "--unfused")
    diff = (transformers_logits(model, saved) - saved["logits"]).abs().max().item()
    print(f"mixtral top-{top_k}: max abs logit difference {diff:.3e}")
    assert diff <= LOGIT_TOLERANCE, f"max abs logit difference {diff}"


@pytest.mark.parametrize("ffn,message", [
    ({"kind": "moe", "num_experts": 4, "top_k": 1, "renormalize_top1": False},
     "renormalize_top1"),
    ({"kind": "moe", "num_experts": 4, "top_k": 2, "layers": [1]}, "leaves block 0 dense"),
    ({"kind": "exfusion", "variant": "mb", "num_experts": 3}, "ffn.kind = exfusion")],
    ids=["top1-unnormalised", "dense-block", "fusing-kind"])
def test_a_mixture_mixtral_cannot_express_is_refused(exfusion_cli, text_corpus, tokenizer,
                                                     tmp_path, ffn, message):
    """What a MixtralForCausalLM cannot be (a top-1 gate that is not 1, a dense layer, a kind
    that fuses): one message naming the key, exit code 2, nothing written."""
    run = train(exfusion_cli, tmp_path, text_corpus, tokenizer, ffn)
    result = subprocess.run([str(exfusion_cli), "export", str(run), "--out",
                             str(tmp_path / "mixtral")], capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "mixtral").exists()


@pytest.mark.parametrize("ffn", [{"kind": "dense"},
                                 {"kind": "moe", "num_experts": 4, "top_k": 2,
                                  "capacity_factor": 0}], ids=["llama", "mixtral"])
def test_greedy_generation_equals_transformers(exfusion_cli, text_corpus, tokenizer, tmp_path,
                                               ffn):
    """`exfusion generate` (greedy, through the key/value cache) continues a prompt with the
    tokens transformers' generate picks (do_sample=False) from the exported model: LlamaForCausalLM
    from the dense run's hf/, MixtralForCausalLM from `exfusion export`. Our logits agree with
    theirs within LOGIT_TOLERANCE, so every step whose two best logits are further apart than
    twice that must pick the same token; the comparison runs up to the first step that is not
    (at least 6 of the 24 steps: a model trained 4 steps has near ties)."""
    run = train(exfusion_cli, tmp_path, text_corpus, tokenizer, ffn)
    architecture = LlamaForCausalLM
    if ffn["kind"] == "moe":
        run_cli(exfusion_cli, "export", run)
        architecture = MixtralForCausalLM
    steps = 24
    ours = json.loads(run_cli(exfusion_cli, "generate", run, "--prompt", "Ab cde fgh ijk",
                              "--max-new-tokens", steps))
    model = architecture.from_pretrained(run / "hf").eval()
    assert_same_greedy_tokens(ours, model, steps, ffn["kind"])


def assert_same_greedy_tokens(ours, model, steps, what):
    """`exfusion generate`'s JSON against transformers' greedy generate from the same prompt ids
    and the same EOS, up to the first step whose two best logits are within twice
    LOGIT_TOLERANCE (at least 6)."""
    assert ours["new_tokens"] == len(ours["generated_ids"]) <= steps
    prompt = torch.tensor([ours["prompt_ids"]])
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=steps, do_sample=False,
                             eos_token_id=ours["eos_id"], output_scores=True,
                             return_dict_in_generate=True)
    theirs = out.sequences[0, prompt.shape[1]:].tolist()
    decided = 0
    for score in out.scores:
        best = score[0].topk(2).values
        if best[0] - best[1] <= 2 * LOGIT_TOLERANCE:
            break
        decided += 1
    decided = min(decided, len(theirs))
    print(f"{what}: {len(theirs)} tokens, {decided} decided by a clear margin")
    assert decided >= 6, "too few steps with a clear best token to compare"
    assert ours["generated_ids"][:decided] == theirs[:decided]
    if decided == len(theirs):
        assert ours["generated_ids"] == theirs


def test_a_directory_with_its_tokenizer_imports_and_generates(exfusion_cli, tokenizer, tmp_path):
    """A transformers Llama directory holding its tokenizer.model imports with no --set at all:
    task causal_lm, and that tokenizer as data.tokenizer; `exfusion generate` on the import
    continues a prompt as transformers' generate does on the directory."""
    source, model = transformers_llama(tmp_path, torch.float32)
    shutil.copy(tokenizer, source / "tokenizer.model")
    imported = tmp_path / "imported.safetensors"
    run_cli(exfusion_cli, "import", source, "--out", imported)
    with safe_open(str(imported), "pt") as weights:
        stored = json.loads(weights.metadata()["exfusion.config"])
    assert stored["task"] == "causal_lm"
    assert stored["data"]["tokenizer"] == str((source / "tokenizer.model").resolve())
    ours = json.loads(run_cli(exfusion_cli, "generate", imported, "--prompt", "Ab cde fgh",
                              "--max-new-tokens", 16))
    assert_same_greedy_tokens(ours, model, 16, "imported")


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(exfusion_cli, tokenizer, tmp_path):
    """A tokenizer.model with more pieces (360) than the model has token ids (300): one message
    naming both, exit code 2, nothing written."""
    settings = {key: value for key, value in model_section().items()
                if key not in ("kind", "sequence_length")}
    settings["vocab_size"] = 300
    source = tmp_path / "small-vocabulary"
    LlamaForCausalLM(LlamaConfig(**settings)).save_pretrained(source)
    shutil.copy(tokenizer, source / "tokenizer.model")
    out = tmp_path / "out.safetensors"
    result = subprocess.run([str(exfusion_cli), "import", str(source), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "360 pieces, more than the model's 300 token ids" in result.stderr, result.stderr
    assert not out.exists()


def test_ders_compression_of_a_llama_mixture(exfusion_cli, text_corpus, tokenizer, tmp_path):
    """`exfusion compress` on a Llama MoE-4-2: the three matrices of both layers' experts (6
    banks) as 8-bit deltas from their mean, in fewer bytes, with the test loss it had (8-bit
    steps move it by about 1e-6 here; a wrong dequantisation or a missed bank moves it by a
    sizeable fraction of a nat, so 0.05 is a wide margin), and the file evaluates."""
    run = train(exfusion_cli, tmp_path, text_corpus, tokenizer,
                {"kind": "moe", "num_experts": 4, "top_k": 2, "capacity_factor": 0})
    out = tmp_path / "compressed.safetensors"
    text = run_cli(exfusion_cli, "compress", run, "--method", "quant", "--bits", 8, "--out", out)
    result = json.loads(text[text.index("{"):])
    assert result["banks"] == 6
    assert result["bytes_after"] < result["bytes_before"]
    assert abs(result["test_loss_after"] - result["test_loss_before"]) < 0.05, result
    saved = our_logits(exfusion_cli, out, tmp_path)
    assert saved["logits"].shape[-1] == model_section()["vocab_size"]
