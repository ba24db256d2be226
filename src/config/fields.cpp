// The non-template half of config/fields.h: locations and error messages, the JSON type
// checks of the plain field types, --help tables and `--set key.path=value` parsing.
#include "exfusion/config/fields.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion::config {

using nlohmann::json;

Location Location::child(const std::string& key) const { return {source, key_path(key)}; }

std::string Location::key_path(const std::string& key) const {
  if (path.empty()) return key;
  return key.empty() ? path : path + "." + key;
}

void fail(const Location& at, const std::string& key, const json& value,
          const std::string& expected) {
  const auto path = at.key_path(key);
  fail(at, (path.empty() ? "" : path + " = ") + brief_json(value) + ": expected " + expected);
}

void fail(const Location& at, const std::string& message) {
  // Options validated outside any config (built in code) have no source to name.
  throw InputError(at.source.empty() ? message : at.source + ": " + message);
}

std::string join_or(const std::vector<std::string>& words) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += i + 1 == words.size() ? " or " : ", ";
    out += words[i];
  }
  return out;
}

Check<std::string> one_of(std::vector<std::string> names) {
  auto expected = join_or(names);
  return {std::move(expected), [names = std::move(names)](const std::string& value) {
            return std::find(names.begin(), names.end(), value) != names.end();
          }};
}

namespace detail {

std::string number_text(int64_t value) { return std::to_string(value); }

std::string number_text(double value) {
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

void read_plain(const json& value, const Location& at, const std::string& key, bool& out) {
  if (!value.is_boolean()) fail(at, key, value, "true or false");
  out = value.get<bool>();
}

namespace {

bool is_int64(const json& value) {
  return value.is_number_integer() &&
         !(value.is_number_unsigned() &&
           value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
}

}  // namespace

void read_plain(const json& value, const Location& at, const std::string& key, int64_t& out) {
  if (!is_int64(value)) fail(at, key, value, "an integer");
  out = value.get<int64_t>();
}

void read_plain(const json& value, const Location& at, const std::string& key, double& out) {
  if (!value.is_number()) fail(at, key, value, "a number");
  if (!std::isfinite(value.get<double>())) fail(at, key, value, "a finite number");
  out = value.get<double>();
}

void read_plain(const json& value, const Location& at, const std::string& key, std::string& out) {
  if (!value.is_string()) fail(at, key, value, "a string");
  out = value.get<std::string>();
}

void read_plain(const json& value, const Location& at, const std::string& key,
                std::vector<int64_t>& out) {
  if (!value.is_array() || !std::all_of(value.begin(), value.end(), is_int64)) {
    fail(at, key, value, "a list of integers");
  }
  out = value.get<std::vector<int64_t>>();
}

void read_plain(const json& value, const Location& at, const std::string& key,
                std::vector<double>& out) {
  if (!value.is_array() ||
      !std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_number(); })) {
    fail(at, key, value, "a list of numbers");
  }
  if (!std::all_of(value.begin(), value.end(),
                   [](const json& v) { return std::isfinite(v.get<double>()); })) {
    fail(at, key, value, "a list of finite numbers");
  }
  out = value.get<std::vector<double>>();
}

const char* type_name(const bool&) { return "bool"; }
const char* type_name(const int64_t&) { return "integer"; }
const char* type_name(const double&) { return "number"; }
const char* type_name(const std::string&) { return "string"; }
const char* type_name(const std::vector<int64_t>&) { return "list of integers"; }
const char* type_name(const std::vector<double>&) { return "list of numbers"; }

void reject_unknown_keys(const json& patch, const Location& at,
                         const std::vector<std::string>& known) {
  for (const auto& item : patch.items()) {
    if (std::find(known.begin(), known.end(), item.key()) == known.end()) {
      std::string keys;
      for (const auto& key : known) keys += (keys.empty() ? "" : ", ") + key;
      fail(at, "unknown key '" + brief_text(at.key_path(item.key())) + "'; known keys: " + keys);
    }
  }
}

void unnamed_choice(const std::string& key) {
  throw std::logic_error("config field '" + key + "' holds a value its Choices do not name");
}

}  // namespace detail

std::string format_help(const std::vector<FieldHelp>& fields) {
  size_t path_width = 0, type_width = 0, default_width = 0;
  for (const auto& field : fields) {
    path_width = std::max(path_width, field.path.size());
    type_width = std::max(type_width, field.type.size());
    default_width = std::max(default_width, field.default_value.size());
  }
  std::string out;
  for (const auto& field : fields) {
    auto help = field.help;
    if (!field.expected.empty()) help += (help.empty() ? "[" : " [") + field.expected + "]";
    std::string line = field.path + std::string(path_width - field.path.size() + 2, ' ') +
                       field.type + std::string(type_width - field.type.size() + 2, ' ') +
                       field.default_value;
    if (!help.empty()) {
      line += std::string(default_width - field.default_value.size() + 2, ' ') + help;
    }
    out += line + "\n";
  }
  return out;
}

json parse_assignment(const std::string& assignment) {
  const auto malformed = [&] {
    return InputError("--set " + assignment + ": expected key.path=value");
  };
  const auto eq = assignment.find('=');
  if (eq == std::string::npos) throw malformed();
  std::vector<std::string> keys;
  std::stringstream parts(assignment.substr(0, eq) + ".");
  for (std::string part; std::getline(parts, part, '.');) {
    if (part.empty()) throw malformed();
    keys.push_back(part);
  }
  const auto text = assignment.substr(eq + 1);
  json value = parse_json_if_json(text, "--set " + assignment.substr(0, eq)).value_or(json(text));
  for (auto key = keys.rbegin(); key != keys.rend(); ++key) {
    json patch = json::object();
    patch[*key] = std::move(value);
    value = std::move(patch);
  }
  return value;
}

}  // namespace exfusion::config
