// Bounded JSON parsing: deep nesting, duplicate keys and NUL bytes are errors naming where
// they are, values parse as nlohmann would, and error quotes stay short.
#include <gtest/gtest.h>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion {
namespace {

using nlohmann::json;

std::string error_of(const std::string& text, size_t max_depth = kMaxJsonDepth) {
  try {
    parse_json_input(text, "input.json", max_depth);
  } catch (const InputError& error) {
    return error.what();
  }
  return "";
}

TEST(JsonInput, ParsesWhatNlohmannParses) {
  const std::string text =
      R"({"a": [1, -2, 3.5, "x", true, null, {"b": {}}], "c": 18446744073709551615, "d": []})";
  EXPECT_EQ(parse_json_input(text, "t"), json::parse(text));
  EXPECT_EQ(parse_json_input("  7 ", "t"), json(7));
  EXPECT_EQ(parse_json_input(R"("\u00e9\n")", "t"), json("\u00e9\n"));
}

TEST(JsonInput, RejectsNestingBeyondTheLimitAndNamesThePath) {
  EXPECT_NO_THROW(parse_json_input(std::string(64, '[') + std::string(64, ']'), "t"));
  EXPECT_EQ(
      error_of(std::string(65, '[') + std::string(65, ']')),
      "input.json: nested deeper than 64 levels at " + [] {
        std::string path;
        for (int i = 0; i < 64; ++i) path += "[0]";
        return path;
      }());
  EXPECT_EQ(error_of(R"({"a": {"b": [1, {"c": {}}]}})", 3),
            "input.json: nested deeper than 3 levels at a.b[1]");
  // A million levels: no recursion, so no stack overflow, and the error comes at once.
  EXPECT_NE(error_of(std::string(1000000, '[')).find("nested deeper than 64 levels"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(1000000, '{')).find("not valid JSON"), std::string::npos);
}

TEST(JsonInput, RejectsDuplicateKeys) {
  EXPECT_EQ(error_of(R"({"train": {"lr": 1, "lr": 2}})"), "input.json: duplicate key 'train.lr'");
  EXPECT_EQ(error_of(R"({"a": 1, "a": 1})"), "input.json: duplicate key 'a'");
  EXPECT_NO_THROW(parse_json_input(R"([{"a": 1}, {"a": 2}])", "t"));
}

TEST(JsonInput, RejectsNulBytesAndTrailingText) {
  EXPECT_EQ(error_of(std::string("{}\0\0\0", 5)),
            "input.json: not valid JSON: a NUL byte at offset 2");
  EXPECT_NE(error_of("{} x").find("not valid JSON: parse error at line 1, column 4"),
            std::string::npos);
  EXPECT_NE(error_of("").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("{\"a\": 1,\n \"b\"}").find("line 2"), std::string::npos);
}

TEST(JsonInput, PlainTextIsNotJsonButTooDeepStillThrows) {
  EXPECT_FALSE(parse_json_if_json("cosine", "--set x").has_value());
  EXPECT_FALSE(parse_json_if_json("[1, 2", "--set x").has_value());
  EXPECT_EQ(parse_json_if_json("[1, 2]", "--set x"), json::parse("[1, 2]"));
  EXPECT_THROW(parse_json_if_json(std::string(100, '[') + std::string(100, ']'), "--set x"),
               InputError);
  EXPECT_THROW(parse_json_if_json(R"({"a": 1, "a": 2})", "--set x"), InputError);
}

TEST(JsonInput, BriefQuotesStayShort) {
  EXPECT_EQ(brief_json(json("short")), "\"short\"");
  EXPECT_EQ(brief_json(json(std::string(1000000, 'a')), 10),
            "\"aaaaaaaaaa\"... (1000000 characters)");
  const auto long_array = brief_json(json(std::vector<int>(100000, 7)));
  EXPECT_EQ(long_array.size(), 60u);
  EXPECT_EQ(long_array.substr(57), "...");
  // Invalid UTF-8 in a value is shown replaced, never a second error while reporting one.
  EXPECT_NO_THROW(brief_json(json(std::string("\xff\xfe"))));
}

}  // namespace
}  // namespace exfusion
