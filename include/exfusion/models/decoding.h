// Incremental decoding, the capability `exfusion generate` looks for on a model (a decoder
// language model: Llama): the keys and values of the positions decoded so far are kept, so
// each new token costs one position's work instead of the whole sequence's again.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>

namespace exfusion {

// What a model keeps between decoding steps; its positions so far.
class DecodingState {
 public:
  virtual ~DecodingState() = default;
  virtual int64_t length() const = 0;
};

class DecodesIncrementally {
 public:
  virtual ~DecodesIncrementally() = default;
  // A fresh state for `batch` sequences of up to `capacity` tokens.
  virtual std::unique_ptr<DecodingState> start_decoding(int64_t batch, int64_t capacity) const = 0;
  // Logits [B, L, vocab] of `tokens` [B, L] at the positions after the state's, each seeing
  // those and itself; the state then holds these positions too. InputError where they would
  // go past the state's capacity or the model's max_position_embeddings.
  virtual torch::Tensor decode(const torch::Tensor& tokens, DecodingState& state) = 0;
};

}  // namespace exfusion
