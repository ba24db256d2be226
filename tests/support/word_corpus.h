// A made-up corpus for the language tasks' tests: sentences of 300 random words, one JSON
// record each, over three JSON Lines shards (shard-0.jsonl …), the same every time.
#pragma once
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace exfusion::testing {

inline void write_word_corpus(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::mt19937 random(5);
  std::vector<std::string> words;
  for (int w = 0; w < 300; ++w) {
    std::string word;
    const auto length = 2 + random() % 7;
    for (size_t c = 0; c < length; ++c) word += static_cast<char>('a' + random() % 26);
    words.push_back(word);
  }
  for (int shard = 0; shard < 3; ++shard) {
    std::ofstream out(dir / ("shard-" + std::to_string(shard) + ".jsonl"));
    for (int line = 0; line < 250; ++line) {
      std::string sentence;
      const auto count = 5 + random() % 25;
      for (size_t k = 0; k < count; ++k) sentence += (k ? " " : "") + words[random() % 300];
      out << nlohmann::json{{"text", sentence + "."}}.dump() << "\n";
    }
  }
}

}  // namespace exfusion::testing
