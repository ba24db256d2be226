// Tokenisation through SentencePiece (Debian's libsentencepiece-dev, its C++ API): any
// SentencePiece model by path (T5's spiece.model, Llama's tokenizer.model, or one trained here
// with train_tokenizer), with T5's sentinels <extra_id_k> after its pieces, numbered from the
// top down as transformers' T5Tokenizer numbers them. A build without SentencePiece reports
// so when a tokenizer is asked for.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "exfusion/text/text_reader.h"

namespace exfusion {

class Tokenizer {
 public:
  // Loads `model`; `extra_ids` sentinels follow its pieces (T5: 100). InputError naming the
  // file when it is not a SentencePiece model, or the model has no EOS piece.
  Tokenizer(const std::filesystem::path& model, int64_t extra_ids);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Token ids of `text`, without EOS. Thread-safe (the loaders' workers share one tokenizer).
  std::vector<int64_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t pieces() const;                                 // the model's own pieces
  int64_t size() const { return pieces() + extra_ids_; }  // transformers' len(tokenizer)
  int64_t eos_id() const;
  int64_t pad_id() const;  // -1 where the model has none
  // <extra_id_k>: size() − 1 − k.
  int64_t sentinel(int64_t k) const { return size() - 1 - k; }
  int64_t extra_ids() const { return extra_ids_; }

 private:
  struct Model;
  std::unique_ptr<Model> model_;
  int64_t extra_ids_;
};

// What `exfusion tokenizer train` takes.
struct TokenizerTraining {
  std::vector<std::string> corpus;  // files, folders or globs (text_reader.h)
  TextReaderOptions reading;
  int64_t vocab_size = 32000;
  int64_t max_documents = 1000000;  // documents read for training, the first ones
  std::filesystem::path out;        // the .model written (a .vocab beside it)
};

struct TrainedTokenizer {
  std::filesystem::path model;
  int64_t vocab_size = 0;
  int64_t documents = 0;
};
// Trains a unigram model as T5's was trained: pad 0, EOS 1, unknown 2, no BOS, byte fallback
// (no text is unknown), digits split; writes training.out.
TrainedTokenizer train_tokenizer(const TokenizerTraining& training);

}  // namespace exfusion
