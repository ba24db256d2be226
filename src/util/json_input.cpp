// Bounded JSON parsing (see json_input.h): nlohmann's SAX parser is iterative, and this
// handler builds the value itself so that it can stop at the depth limit and at a repeated
// key, naming the path where that happened.
#include "exfusion/util/json_input.h"

#include <vector>

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

using nlohmann::json;

class BoundedBuilder : public nlohmann::json_sax<json> {
 public:
  explicit BoundedBuilder(size_t max_depth) : max_depth_(max_depth) {}

  bool null() override { return add(json(nullptr)); }
  bool boolean(bool value) override { return add(json(value)); }
  bool number_integer(number_integer_t value) override { return add(json(value)); }
  bool number_unsigned(number_unsigned_t value) override { return add(json(value)); }
  bool number_float(number_float_t value, const string_t& /*text*/) override {
    return add(json(value));
  }
  bool string(string_t& value) override { return add(json(std::move(value))); }
  bool binary(binary_t& value) override { return add(json::binary(std::move(value))); }

  bool start_object(std::size_t /*elements*/) override { return open(json::object()); }
  bool key(string_t& name) override {
    if (open_.back().value->contains(name)) {
      return stop("duplicate key '" + path_with(name) + "'");
    }
    open_.back().key = std::move(name);
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t /*elements*/) override { return open(json::array()); }
  bool end_array() override { return close(); }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& error) override {
    // what() reads "[json.exception.parse_error.101] parse error at line 2, column 3: ...".
    std::string message = error.what();
    const auto tag_end = message.find("] ");
    if (tag_end != std::string::npos) message.erase(0, tag_end + 2);
    syntax_error_ = true;
    return stop("not valid JSON: " + message);
  }

  json take() { return std::move(root_); }
  const std::string& problem() const { return problem_; }
  bool syntax_error() const { return syntax_error_; }

 private:
  struct Open {
    json* value;
    std::string key;  // an object's key awaiting its value
  };

  bool stop(std::string problem) {
    problem_ = std::move(problem);
    return false;
  }

  // Where the next value goes: "a.b[3]" (in the innermost array, the index it would take;
  // in the outer ones, that of the open child).
  std::string path_with(const std::string& last_key) const {
    std::string path;
    for (size_t i = 0; i < open_.size(); ++i) {
      const auto& level = open_[i];
      const bool last = i + 1 == open_.size();
      if (level.value->is_array()) {
        path += "[" + std::to_string(level.value->size() - (last ? 0 : 1)) + "]";
      } else {
        const auto& key = last ? last_key : level.key;
        path += (path.empty() ? "" : ".") + key;
      }
    }
    return path;
  }

  json* place(json value) {
    if (open_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    auto& parent = *open_.back().value;
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    auto& slot = parent[open_.back().key];
    slot = std::move(value);
    return &slot;
  }

  bool add(json value) {
    place(std::move(value));
    return true;
  }

  bool open(json container) {
    if (open_.size() >= max_depth_) {
      const auto at = open_.empty() ? std::string() : path_with(open_.back().key);
      return stop("nested deeper than " + std::to_string(max_depth_) + " levels" +
                  (at.empty() ? "" : " at " + at));
    }
    open_.push_back({place(std::move(container)), {}});
    return true;
  }

  bool close() {
    open_.pop_back();
    return true;
  }

  size_t max_depth_;
  json root_;
  std::vector<Open> open_;
  std::string problem_;
  bool syntax_error_ = false;
};

// nlohmann reads a NUL byte as the end of the input, so "{}\0junk" would pass; JSON allows
// none outside a string and escaped ones only inside.
std::optional<std::string> nul_byte_problem(std::string_view text) {
  const auto nul = text.find('\0');
  if (nul == std::string_view::npos) return std::nullopt;
  return "not valid JSON: a NUL byte at offset " + std::to_string(nul);
}

}  // namespace

std::optional<json> parse_json_if_json(std::string_view text, const std::string& where,
                                       size_t max_depth) {
  if (nul_byte_problem(text)) return std::nullopt;
  BoundedBuilder builder(max_depth);
  if (json::sax_parse(text.begin(), text.end(), &builder)) return builder.take();
  if (builder.syntax_error()) return std::nullopt;
  throw InputError(where + ": " + builder.problem());
}

json parse_json_input(std::string_view text, const std::string& where, size_t max_depth) {
  if (const auto problem = nul_byte_problem(text)) throw InputError(where + ": " + *problem);
  BoundedBuilder builder(max_depth);
  if (!json::sax_parse(text.begin(), text.end(), &builder)) {
    throw InputError(where + ": " + builder.problem());
  }
  return builder.take();
}

std::string brief_text(std::string_view text, size_t max_chars) {
  if (text.size() <= max_chars) return std::string(text);
  return std::string(text.substr(0, max_chars)) + "... (" + std::to_string(text.size()) +
         " characters)";
}

std::string brief_json(const json& value, size_t max_chars) {
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    if (text.size() > max_chars) {
      return json(text.substr(0, max_chars)).dump(-1, ' ', false, json::error_handler_t::replace) +
             "... (" + std::to_string(text.size()) + " characters)";
    }
  }
  auto text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > max_chars) text = text.substr(0, max_chars - 3) + "...";
  return text;
}

}  // namespace exfusion
