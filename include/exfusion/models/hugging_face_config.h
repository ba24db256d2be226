// Reading a Hugging Face checkpoint's config.json, which every model kind's Hugging Face format
// (ViT, T5, Llama) reads its architecture from: bounded in size, a JSON object, with typed
// lookups that name the file and the key when a value is not what the config class allows.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "exfusion/config/fields.h"

namespace exfusion {

class HuggingFaceConfig {
 public:
  // config.json at `path`, read for the weights at `model` (named in the error when it is
  // missing); `expected` names the config class ("a T5Config") in errors.
  HuggingFaceConfig(const std::filesystem::path& path, const std::filesystem::path& model,
                    const std::string& expected);
  const nlohmann::json& json() const { return json_; }
  const config::Location& location() const { return at_; }
  bool contains(const char* key) const { return json_.contains(key); }
  int64_t integer(const char* key, int64_t fallback) const;
  double number(const char* key, double fallback) const;
  std::string text(const char* key, const std::string& fallback) const;
  // InputError naming the key when the config holds another value than `wanted`.
  void expect(const char* key, const nlohmann::json& wanted, const std::string& why) const;

 private:
  nlohmann::json json_;
  config::Location at_;
};

}  // namespace exfusion
