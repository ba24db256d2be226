// A Hugging Face config.json, bounded and typed (see hugging_face_config.h).
#include "exfusion/models/hugging_face_config.h"

#include <fstream>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

// A Hugging Face config.json is a few kilobytes (an id2label of 21k classes: under 1 MB).
constexpr std::uintmax_t kMaxConfigBytes = 64u << 20;

std::string read_config_text(const fs::path& path, const fs::path& model) {
  std::error_code error;
  const auto size = fs::file_size(path, error);
  if (error) {
    throw InputError(model.string() + ": a Hugging Face checkpoint is read with its config.json: " +
                     path.string() + " cannot be read (" + error.message() + ")");
  }
  if (size > kMaxConfigBytes) {
    throw InputError(path.string() + ": " + std::to_string(size) +
                     " bytes, more than a config.json holds (at most " +
                     std::to_string(kMaxConfigBytes) + ")");
  }
  std::ifstream in(path, std::ios::binary);
  std::string text(size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) {
    throw InputError(path.string() + ": cannot be read");
  }
  return text;
}

}  // namespace

HuggingFaceConfig::HuggingFaceConfig(const fs::path& path, const fs::path& model,
                                     const std::string& expected)
    : json_(parse_json_input(read_config_text(path, model), path.string())),
      at_{path.string(), ""} {
  if (!json_.is_object()) config::fail(at_, "a JSON object (" + expected + ") expected");
}

int64_t HuggingFaceConfig::integer(const char* key, int64_t fallback) const {
  if (!json_.contains(key)) return fallback;
  const auto& value = json_.at(key);
  if (!value.is_number_integer()) config::fail(at_, key, value, "an integer");
  return value.get<int64_t>();
}

double HuggingFaceConfig::number(const char* key, double fallback) const {
  if (!json_.contains(key)) return fallback;
  const auto& value = json_.at(key);
  if (!value.is_number()) config::fail(at_, key, value, "a number");
  return value.get<double>();
}

std::string HuggingFaceConfig::text(const char* key, const std::string& fallback) const {
  if (!json_.contains(key)) return fallback;
  const auto& value = json_.at(key);
  if (!value.is_string()) config::fail(at_, key, value, "a string");
  return value.get<std::string>();
}

void HuggingFaceConfig::expect(const char* key, const nlohmann::json& wanted,
                               const std::string& why) const {
  if (json_.contains(key) && json_.at(key) != wanted) {
    config::fail(at_, key, json_.at(key), wanted.dump() + " (" + why + ")");
  }
}

}  // namespace exfusion
