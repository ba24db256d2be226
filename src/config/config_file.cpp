// Config files (see config/config_file.h): JSON through nlohmann, YAML through yaml-cpp with
// plain scalars typed by YAML 1.2's core schema, and a small block-style YAML writer that
// quotes every string a reader would otherwise take for a number, bool or null.
#include "exfusion/config/config_file.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <optional>
#include <regex>

#include "exfusion/util/error.h"

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

class YamlConverter {
 public:
  explicit YamlConverter(std::string file) : file_(std::move(file)) {}

  json convert(const YAML::Node& node, const std::string& path) const {
    switch (node.Type()) {
      case YAML::NodeType::Map:
        return convert_map(node, path);
      case YAML::NodeType::Sequence: {
        json out = json::array();
        for (size_t i = 0; i < node.size(); ++i) {
          out.push_back(convert(node[i], path + "[" + std::to_string(i) + "]"));
        }
        return out;
      }
      case YAML::NodeType::Scalar:
        return convert_scalar(node, path);
      default:  // Null (and Undefined, which a parsed document does not hold)
        return nullptr;
    }
  }

  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& message) const {
    throw InputError(file_ + (mark.line >= 0 ? ":" + std::to_string(mark.line + 1) : "") + ": " +
                     message);
  }

 private:
  json convert_map(const YAML::Node& node, const std::string& path) const {
    json out = json::object();
    for (const auto& entry : node) {
      if (!entry.first.IsScalar()) fail(entry.first.Mark(), "a mapping key must be a scalar");
      const auto& key = entry.first.Scalar();
      const auto key_path = path.empty() ? key : path + "." + key;
      if (out.contains(key)) fail(entry.first.Mark(), "duplicate key '" + key_path + "'");
      out[key] = convert(entry.second, key_path);
    }
    return out;
  }

  json convert_scalar(const YAML::Node& node, const std::string& path) const {
    const auto& text = node.Scalar();
    const auto& tag = node.Tag();
    if (tag == "!" || tag == "tag:yaml.org,2002:str") return text;  // quoted or block scalars
    if (tag != "?")
      fail(node.Mark(), (path.empty() ? "" : path + ": ") + "unsupported tag '" + tag + "'");
    if (auto value = bool_or_null(text)) return *value;
    const auto where = path.empty() ? text : path + " = " + text;
    static const std::regex kDecimal("[-+]?[0-9]+"), kOctal("0o[0-7]+"), kHex("0x[0-9a-fA-F]+"),
        kFloat(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)"),
        kSpecial(R"([-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))");
    const auto integer = [&](size_t skip, int base) {
      int64_t value = 0;
      const auto* begin = text.data() + skip + (text[0] == '+' ? 1 : 0);
      const auto result = std::from_chars(begin, text.data() + text.size(), value, base);
      if (result.ec != std::errc()) fail(node.Mark(), where + ": integer out of range");
      return json(value);
    };
    if (std::regex_match(text, kDecimal)) return integer(0, 10);
    if (std::regex_match(text, kOctal)) return integer(2, 8);
    if (std::regex_match(text, kHex)) return integer(2, 16);
    if (std::regex_match(text, kFloat)) {
      double value = 0;
      const auto* begin = text.data() + (text[0] == '+' ? 1 : 0);
      const auto result = std::from_chars(begin, text.data() + text.size(), value);
      if (result.ec != std::errc()) fail(node.Mark(), where + ": number out of range");
      return value;
    }
    if (std::regex_match(text, kSpecial)) {
      fail(node.Mark(), where + ": expected a finite number (.inf and .nan are not accepted)");
    }
    return text;
  }

  std::string file_;
};

json read_yaml(std::istream& in, const std::string& file) {
  const YamlConverter converter(file);
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(in);
  } catch (const YAML::Exception& error) {
    converter.fail(error.mark, error.msg);
  }
  if (documents.empty()) return nullptr;
  if (documents.size() > 1) converter.fail(documents[1].Mark(), "expected one YAML document");
  return converter.convert(documents[0], "");
}

json read_json(std::istream& in, const std::string& file) {
  try {
    return json::parse(in);
  } catch (const json::parse_error& error) {
    // what() is "[json.exception.parse_error.101] parse error at line 2, column 3: ...".
    std::string message = error.what();
    const auto tag_end = message.find("] ");
    if (tag_end != std::string::npos) message.erase(0, tag_end + 2);
    throw InputError(file + ": not valid JSON: " + message);
  }
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
  std::ifstream in(path);
  if (!in) throw InputError(file + ": cannot open the file");
  return yaml ? read_yaml(in, file) : read_json(in, file);
}

std::string to_yaml(const json& config) {
  if (!is_block(config)) return yaml_scalar(config) + "\n";
  std::string out;
  write_block(config, 0, out);
  return out;
}

}  // namespace exfusion::config
