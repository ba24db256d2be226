// Config files (see config/config_file.h): JSON through the bounded parser (json_input.h),
// YAML through yaml-cpp's parser events with plain scalars typed by YAML 1.2's core schema,
// and a small block-style YAML writer that quotes every string a reader would otherwise take
// for a number, bool or null.
#include "exfusion/config/config_file.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion::config {
namespace {

using nlohmann::json;

// The core schema's booleans and nulls (yaml-cpp already reports null, ~ and "" as Null).
std::optional<json> bool_or_null(const std::string& text) {
  if (text == "true" || text == "True" || text == "TRUE") return json(true);
  if (text == "false" || text == "False" || text == "FALSE") return json(false);
  if (text == "null" || text == "Null" || text == "NULL" || text == "~") return json(nullptr);
  return std::nullopt;
}

// The core schema's number forms, matched by hand: std::regex recurses once per character
// and overflows the stack on a long scalar.
bool is_decimal_digit(char c) { return c >= '0' && c <= '9'; }
bool is_octal_digit(char c) { return c >= '0' && c <= '7'; }
bool is_hex_digit(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

size_t skip_digits(std::string_view text, size_t at, bool (*digit)(char)) {
  while (at < text.size() && digit(text[at])) ++at;
  return at;
}
size_t skip_sign(std::string_view text, size_t at) {
  return at < text.size() && (text[at] == '-' || text[at] == '+') ? at + 1 : at;
}

// [-+]?[0-9]+
bool is_decimal(std::string_view text) {
  const size_t start = skip_sign(text, 0);
  const size_t end = skip_digits(text, start, is_decimal_digit);
  return end > start && end == text.size();
}

// 0o[0-7]+ and 0x[0-9a-fA-F]+
bool has_prefixed_digits(std::string_view text, std::string_view prefix, bool (*digit)(char)) {
  return text.size() > prefix.size() && text.substr(0, prefix.size()) == prefix &&
         skip_digits(text, prefix.size(), digit) == text.size();
}

// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool is_float(std::string_view text) {
  size_t at = skip_sign(text, 0);
  if (at < text.size() && text[at] == '.') {
    const size_t end = skip_digits(text, at + 1, is_decimal_digit);
    if (end == at + 1) return false;
    at = end;
  } else {
    const size_t end = skip_digits(text, at, is_decimal_digit);
    if (end == at) return false;
    at = end;
    if (at < text.size() && text[at] == '.') at = skip_digits(text, at + 1, is_decimal_digit);
  }
  if (at < text.size() && (text[at] == 'e' || text[at] == 'E')) {
    const size_t digits = skip_sign(text, at + 1);
    const size_t end = skip_digits(text, digits, is_decimal_digit);
    if (end == digits) return false;
    at = end;
  }
  return at == text.size();
}

// [-+]?\.(inf|Inf|INF) and \.(nan|NaN|NAN)
bool is_inf_or_nan(std::string_view text) {
  const auto unsigned_text = text.substr(skip_sign(text, 0));
  if (unsigned_text == ".inf" || unsigned_text == ".Inf" || unsigned_text == ".INF") return true;
  return text == ".nan" || text == ".NaN" || text == ".NAN";
}

// Aliases let a few lines of YAML name an exponential number of values; a config has a few
// hundred, so this many is an error rather than a way to exhaust memory.
constexpr size_t kMaxYamlValues = 100000;

size_t count_values(const json& value) {
  size_t count = 0;
  std::vector<const json*> pending{&value};
  while (!pending.empty()) {
    const auto* item = pending.back();
    pending.pop_back();
    ++count;
    if (item->is_structured()) {
      for (const auto& child : *item) pending.push_back(&child);
    }
  }
  return count;
}

// Builds the JSON value straight from yaml-cpp's parser events: no node graph (whose memory
// aliases can inflate), a depth and a value budget, and every error at its line.
class YamlToJson : public YAML::EventHandler {
 public:
  explicit YamlToJson(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& message) const {
    throw InputError(file_ + (mark.line >= 0 ? ":" + std::to_string(mark.line + 1) : "") + ": " +
                     message);
  }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > 1) fail(mark, "expected one YAML document");
  }
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (expecting_key()) fail(mark, "a mapping key must be a scalar");
    add(mark, nullptr, anchor);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    const auto found = anchored_.find(anchor);
    if (found == anchored_.end()) fail(mark, "an alias to an unknown anchor");
    if (expecting_key()) {
      if (!found->second.is_string()) fail(mark, "a mapping key must be a scalar");
      set_key(mark, found->second.get<std::string>());
      return;
    }
    add(mark, found->second, YAML::NullAnchor);
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    if (expecting_key()) {
      set_key(mark, value);
      if (anchor != YAML::NullAnchor) anchored_[anchor] = value;
      return;
    }
    add(mark, typed_scalar(mark, tag, value), anchor);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value /*style*/) override {
    open(mark, json::array(), anchor);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value /*style*/) override {
    open(mark, json::object(), anchor);
  }
  void OnMapEnd() override { close(); }

  json take() { return std::move(root_); }

 private:
  struct Open {
    json value;
    YAML::anchor_t anchor;
    std::string path;
    bool has_key = false;  // a map's key read, its value awaited
    std::string key;
  };

  bool expecting_key() const {
    return !open_.empty() && open_.back().value.is_object() && !open_.back().has_key;
  }

  std::string child_path() const {
    if (open_.empty()) return "";
    const auto& parent = open_.back();
    if (parent.value.is_array()) {
      return parent.path + "[" + std::to_string(parent.value.size()) + "]";
    }
    return parent.path.empty() ? parent.key : parent.path + "." + parent.key;
  }

  void set_key(const YAML::Mark& mark, const std::string& key) {
    auto& map = open_.back();
    const auto key_path = map.path.empty() ? key : map.path + "." + key;
    if (map.value.contains(key)) fail(mark, "duplicate key '" + key_path + "'");
    map.key = key;
    map.has_key = true;
  }

  void count(const YAML::Mark& mark, size_t values) {
    values_ += values;
    if (values_ > kMaxYamlValues) {
      fail(mark, "more than " + std::to_string(kMaxYamlValues) +
                     " values (aliases expanding without bound?)");
    }
  }

  void add(const YAML::Mark& mark, json value, YAML::anchor_t anchor) {
    count(mark, count_values(value));
    if (anchor != YAML::NullAnchor) anchored_[anchor] = value;
    place(std::move(value));
  }

  void place(json value) {
    if (open_.empty()) {
      root_ = std::move(value);
      return;
    }
    auto& parent = open_.back();
    if (parent.value.is_array()) {
      parent.value.push_back(std::move(value));
    } else {
      parent.value[parent.key] = std::move(value);
      parent.has_key = false;
    }
  }

  void open(const YAML::Mark& mark, json container, YAML::anchor_t anchor) {
    if (expecting_key()) fail(mark, "a mapping key must be a scalar");
    const auto path = child_path();
    if (open_.size() >= kMaxJsonDepth) {
      fail(mark, "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels" +
                     (path.empty() ? "" : " at " + path));
    }
    count(mark, 1);
    open_.push_back({std::move(container), anchor, path, false, {}});
  }

  void close() {
    auto done = std::move(open_.back());
    open_.pop_back();
    if (done.anchor != YAML::NullAnchor) anchored_[done.anchor] = done.value;
    place(std::move(done.value));
  }

  json typed_scalar(const YAML::Mark& mark, const std::string& tag, const std::string& text) const {
    if (tag == "!" || tag == "tag:yaml.org,2002:str") return text;  // quoted or block scalars
    const auto path = child_path();
    if (tag != "?") {
      fail(mark, (path.empty() ? "" : path + ": ") + "unsupported tag '" + tag.substr(0, 60) + "'");
    }
    if (auto value = bool_or_null(text)) return *value;
    const auto shown = text.size() > 60 ? text.substr(0, 57) + "..." : text;
    const auto where = path.empty() ? shown : path + " = " + shown;
    const auto integer = [&](size_t skip, int base) {
      int64_t value = 0;
      const auto* begin = text.data() + skip + (text[0] == '+' ? 1 : 0);
      const auto result = std::from_chars(begin, text.data() + text.size(), value, base);
      if (result.ec != std::errc()) fail(mark, where + ": integer out of range");
      return json(value);
    };
    if (is_decimal(text)) return integer(0, 10);
    if (has_prefixed_digits(text, "0o", is_octal_digit)) return integer(2, 8);
    if (has_prefixed_digits(text, "0x", is_hex_digit)) return integer(2, 16);
    if (is_float(text)) {
      double value = 0;
      const auto* begin = text.data() + (text[0] == '+' ? 1 : 0);
      const auto result = std::from_chars(begin, text.data() + text.size(), value);
      if (result.ec != std::errc()) fail(mark, where + ": number out of range");
      return value;
    }
    if (is_inf_or_nan(text)) {
      fail(mark, where + ": expected a finite number (.inf and .nan are not accepted)");
    }
    return text;
  }

  std::string file_;
  json root_;
  std::vector<Open> open_;
  std::map<YAML::anchor_t, json> anchored_;
  size_t values_ = 0;
  int documents_ = 0;
};

json read_yaml(std::string_view text, const std::string& file) {
  YamlToJson builder(file);
  std::istringstream in{std::string(text)};
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(builder)) {
    }
  } catch (const YAML::Exception& error) {
    builder.fail(error.mark, error.msg);
  }
  return builder.take();
}

json read_json(std::string_view text, const std::string& file) {
  return parse_json_input(text, file);
}

// A string written plain reads back as that string: a word of letters, digits and _ . / -
// that starts like a word and is no bool or null.
bool plain_safe(const std::string& text) {
  const auto word = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '/' ||
           c == '-';
  };
  return !text.empty() &&
         (std::isalpha(static_cast<unsigned char>(text[0])) || text[0] == '_' || text[0] == '/') &&
         std::all_of(text.begin(), text.end(), word) && !bool_or_null(text);
}

std::string yaml_scalar(const json& value) {
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    return plain_safe(text) ? text : value.dump();  // JSON's escapes are YAML's too
  }
  if (value.is_object()) return "{}";
  if (value.is_array()) return "[]";
  return value.dump();  // numbers (doubles keep a '.' or an exponent), bools, null
}

bool is_block(const json& value) {
  return (value.is_object() || value.is_array()) && !value.empty();
}

void write_block(const json& value, size_t indent, std::string& out) {
  const std::string spaces(indent, ' ');
  const auto entry = [&](const std::string& head, const json& item) {
    out += spaces + head;
    if (is_block(item)) {
      out += "\n";
      write_block(item, indent + 2, out);
    } else {
      out += " " + yaml_scalar(item) + "\n";
    }
  };
  if (value.is_object()) {
    for (const auto& item : value.items()) entry(yaml_scalar(item.key()) + ":", item.value());
  } else {
    for (const auto& item : value) entry("-", item);
  }
}

}  // namespace

json read_config_file(const std::filesystem::path& path) {
  const auto file = path.string();
  auto extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  const bool yaml = extension == ".yaml" || extension == ".yml";
  if (!yaml && extension != ".json") {
    throw InputError(file + ": unknown config file type; expected a .json, .yaml or .yml file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(file + ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config_text(text.str(), yaml ? ConfigFormat::yaml : ConfigFormat::json, file);
}

json parse_config_text(std::string_view text, ConfigFormat format, const std::string& file) {
  return format == ConfigFormat::yaml ? read_yaml(text, file) : read_json(text, file);
}

std::string to_yaml(const json& config) {
  if (!is_block(config)) return yaml_scalar(config) + "\n";
  std::string out;
  write_block(config, 0, out);
  return out;
}

}  // namespace exfusion::config
