"""Span corruption against a NumPy reference of the published algorithm (T5's
random_spans_noise_mask, and transformers' create_sentinel_ids / filter_input_ids as nanoT5 uses
them), written here from their definitions. The batches come from `exfusion data --save` on a
tokenizer `exfusion tokenizer train` made: each sample's raw chunk and noise mask are read back
from its inputs and targets, the reference rebuilds the pair from them, and the masks' counts and
the spread of their spans are compared with the reference's own masks."""
import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import run_cli

NOISE_DENSITY = 0.15
MEAN_SPAN = 3.0
INPUT_LENGTH = 64
EXTRA_IDS = 100


def reference_lengths(inputs_length, noise_density, mean_noise_span_length):
    """nanoT5's compute_input_and_target_lengths."""
    def lengths(tokens_length):
        num_noise = int(round(tokens_length * noise_density))
        num_nonnoise = tokens_length - num_noise
        num_spans = int(round(num_noise / mean_noise_span_length))
        return num_nonnoise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    inputs, targets = lengths(tokens_length)
    if noise_density == 0.5 and targets > inputs:
        tokens_length -= 1
        targets -= 1
    return tokens_length, targets


def reference_mask(length, noise_density, mean_noise_span_length, rng):
    """T5's random_spans_noise_mask (NumPy, as transformers' run_t5_mlm_flax has it)."""
    num_noise = int(np.round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = int(np.round(min(num_noise, length - num_noise) / mean_noise_span_length))
    num_spans = max(num_spans, 1)
    num_nonnoise = length - num_noise

    def random_segmentation(num_items, num_segments):
        mask_indices = np.arange(num_items - 1) < (num_segments - 1)
        rng.shuffle(mask_indices)
        first_in_segment = np.pad(mask_indices, [[1, 0]])
        segment_id = np.cumsum(first_in_segment)
        _, segment_length = np.unique(segment_id, return_counts=True)
        return segment_length

    noise_lengths = random_segmentation(num_noise, num_spans)
    nonnoise_lengths = random_segmentation(num_nonnoise, num_spans)
    interleaved = np.reshape(np.stack([nonnoise_lengths, noise_lengths], axis=1),
                             [num_spans * 2])
    span_starts = np.cumsum(interleaved)[:-1]
    span_start_indicator = np.zeros((length,), dtype=np.int8)
    span_start_indicator[span_starts] = True
    span_num = np.cumsum(span_start_indicator)
    return np.equal(span_num % 2, 1)[:length]


def reference_pair(tokens, mask, vocabulary, eos):
    """transformers' create_sentinel_ids and filter_input_ids on one sample."""
    def sentinel_ids(mask_indices):
        mask_indices = mask_indices.astype(np.int64)
        start_indices = mask_indices - np.roll(mask_indices, 1) * mask_indices
        start_indices[0] = mask_indices[0]
        ids = np.where(start_indices != 0, np.cumsum(start_indices), start_indices)
        ids = np.where(ids != 0, vocabulary - ids, 0)
        return ids - (mask_indices - start_indices)

    def filter_ids(ids, sentinels):
        full = np.where(sentinels != 0, sentinels, ids)
        return np.concatenate([full[full >= 0], [eos]])

    return (filter_ids(tokens, sentinel_ids(mask)), filter_ids(tokens, sentinel_ids(~mask)))


def read_back(inputs, targets, first_sentinel):
    """The raw chunk and its noise mask, from one sample's inputs and targets."""
    def is_sentinel(token):
        return first_sentinel - EXTRA_IDS < token <= first_sentinel

    spans = {}  # noise span k's tokens: after sentinel k in the targets
    current = None
    for token in targets[:-1]:
        if is_sentinel(token):
            current = first_sentinel - token
            spans[current] = []
        else:
            spans[current].append(token)
    raw, mask = [], []
    for token in inputs[:-1]:
        if is_sentinel(token):
            noise = spans[first_sentinel - token]
            raw += noise
            mask += [True] * len(noise)
        else:
            raw.append(token)
            mask.append(False)
    return np.array(raw, dtype=np.int64), np.array(mask, dtype=bool)


@pytest.fixture(scope="module")
def batches(exfusion_cli, text_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("batches")
    spiece = out / "spiece.model"
    trained = json.loads(run_cli(exfusion_cli, "tokenizer", "train", str(text_corpus / "*.jsonl"),
                                 "--vocab-size", 400, "--out", spiece))
    assert trained["vocab_size"] == 400
    raw, targets = reference_lengths(INPUT_LENGTH, NOISE_DENSITY, MEAN_SPAN)
    config = {
        "task": "span_corruption",
        "model": {"kind": "t5", "vocab_size": 512, "d_model": 16, "d_kv": 4, "d_ff": 32,
                  "num_heads": 2, "num_layers": 1, "num_decoder_layers": 1,
                  "input_length": INPUT_LENGTH, "target_length": targets},
        "data": {"train": str(text_corpus / "*.jsonl"), "tokenizer": str(spiece),
                 "samples_per_epoch": 4096, "validation_share": 0.05,
                 "noise_density": NOISE_DENSITY,
                 "mean_noise_span_length": MEAN_SPAN},
        "train": {"batch_size": 32, "seed": 3},
    }
    (out / "config.json").write_text(json.dumps(config))
    saved = out / "batches.safetensors"
    info = json.loads(run_cli(exfusion_cli, "data", "--config", out / "config.json",
                              "--batches", 16, "--save", saved))
    tensors = load_file(str(saved))
    return {"tensors": tensors, "raw": raw, "targets": targets, "info": info,
            "vocabulary": 400 + EXTRA_IDS}


def test_lengths_are_nanot5s(batches):
    tensors = batches["tensors"]
    assert batches["info"]["raw_tokens"] == batches["raw"]
    assert tensors["inputs"].shape == (512, INPUT_LENGTH)
    assert tensors["targets"].shape == (512, batches["targets"])
    # The decoder reads the targets shifted right after the decoder start (pad, 0).
    assert (tensors["decoder_inputs"][:, 0] == 0).all()
    assert (tensors["decoder_inputs"][:, 1:] == tensors["targets"][:, :-1]).all()


def test_pairs_equal_the_reference_on_the_same_chunk_and_mask(batches):
    tensors, vocabulary = batches["tensors"], batches["vocabulary"]
    first_sentinel = vocabulary - 1
    for inputs, targets in zip(tensors["inputs"], tensors["targets"]):
        raw, mask = read_back(inputs, targets, first_sentinel)
        assert len(raw) == batches["raw"]
        assert raw.max() < vocabulary - EXTRA_IDS, "a sentinel id among the corpus' tokens"
        expected_inputs, expected_targets = reference_pair(raw, mask, vocabulary, eos=1)
        np.testing.assert_array_equal(inputs, expected_inputs)
        np.testing.assert_array_equal(targets, expected_targets)


def masks_of(batches):
    first_sentinel = batches["vocabulary"] - 1
    tensors = batches["tensors"]
    return np.stack([read_back(i, t, first_sentinel)[1]
                     for i, t in zip(tensors["inputs"], tensors["targets"])])


def span_lengths(mask):
    """(noise span lengths, non-noise span lengths) of one mask, in order."""
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    runs = np.split(mask, edges)
    return ([len(r) for r in runs if r[0]], [len(r) for r in runs if not r[0]])


def test_masks_have_the_references_counts_and_spread(batches):
    ours = masks_of(batches)
    rng = np.random.default_rng(0)
    theirs = np.stack([reference_mask(batches["raw"], NOISE_DENSITY, MEAN_SPAN, rng)
                       for _ in range(20000)])
    # Counts are deterministic: 70 · 0.15 = 10.5 rounds (half to even) to 10 noise tokens, in
    # round(10 / 3) = 3 spans, after a non-noise span; every mask alike.
    assert (ours.sum(axis=1) == theirs[0].sum()).all()
    assert theirs[0].sum() == 10
    for mask in ours:
        noise, nonnoise = span_lengths(mask)
        assert len(noise) == 3 and len(nonnoise) == 3 and not mask[0] and mask[-1]
    # The spread: how often each position is noise, and the first noise span's length, each a
    # mean over our samples within 5 standard errors (from the reference's spread) of the
    # reference's mean.
    samples = len(ours)
    for name, ours_values, their_values in [
        ("position noise rate", ours.mean(axis=0), theirs.mean(axis=0)),
        ("first span length", np.array([span_lengths(m)[0][0] for m in ours]).mean(),
         np.array([span_lengths(m)[0][0] for m in theirs[:2000]]).mean()),
    ]:
        if name == "position noise rate":
            std_error = np.sqrt(their_values * (1 - their_values) / samples)
            assert (np.abs(ours_values - their_values) <= 5 * std_error + 1e-12).all(), name
        else:
            spread = np.array([span_lengths(m)[0][0] for m in theirs[:2000]]).std()
            assert abs(ours_values - their_values) <= 5 * spread / math.sqrt(samples), name
