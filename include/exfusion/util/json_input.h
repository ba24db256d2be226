// JSON that comes from outside the program (config files, --set values, safetensors headers,
// checkpoint metadata), parsed with bounds: nesting deeper than a limit and duplicate keys
// are errors naming where they are, never a stack overflow or a silently dropped value.
// Torch-free, so the fuzz targets link it on its own.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace exfusion {

// Deeper than any config or header this tool writes (they nest 5 levels at most) and far
// below what the recursive code that walks a value (dump(), error messages) can take.
constexpr size_t kMaxJsonDepth = 64;

// Parses `text` without recursion. Throws InputError "<where>: <problem>" for a syntax error
// (with nlohmann's line and column), nesting deeper than `max_depth` ("nested deeper than 64
// levels at a.b[3]") and a key given twice in one object ("duplicate key 'a.b'").
nlohmann::json parse_json_input(std::string_view text, const std::string& where,
                                size_t max_depth = kMaxJsonDepth);

// As parse_json_input, but text that is not JSON at all gives nullopt (a --set value that is
// a plain string); too deep or duplicate keys still throw.
std::optional<nlohmann::json> parse_json_if_json(std::string_view text, const std::string& where,
                                                 size_t max_depth = kMaxJsonDepth);

// A value quoted in an error message, cut to about `max_chars` so that a huge string or array
// cannot flood the message: "[1,2,3,...]" or "\"aaaa...\" (32000000 characters)".
std::string brief_json(const nlohmann::json& value, size_t max_chars = 60);

// Text quoted in an error message (a --set assignment, a key), cut the same way:
// "train.lr=xxxx... (100009 characters)".
std::string brief_text(std::string_view text, size_t max_chars = 60);

}  // namespace exfusion
