// Config files (config/config_file.h): YAML and JSON with the same content read to equal
// JSON, YAML's plain scalars follow the core schema, errors name the file and line, and
// to_yaml() text reads back equal (the shipped configs included).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "../support/cli.h"
#include "../support/input_errors.h"
#include "exfusion/config/config_file.h"
#include "exfusion/util/error.h"

namespace exfusion::config {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using exfusion::testing::error_of;

class ConfigFile : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::fresh_temp_dir("config-file"); }
  void TearDown() override { testing::remove_tree(dir_); }

  fs::path write(const std::string& name, const std::string& text) const {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    return path;
  }
  json read_yaml(const std::string& text) const { return read_config_file(write("c.yaml", text)); }
  std::string yaml_error(const std::string& text) const {
    return error_of([&] { read_yaml(text); });
  }

  fs::path dir_;
};

TEST_F(ConfigFile, YamlAndJsonWithTheSameContentAreEqual) {
  const auto from_json = read_config_file(write("run.json", R"({
  "model": {"embed_dim": 128, "mlp_ratio": 2.0, "name": "vit"},
  "ffn": {"kind": "exfusion", "layers": [0, 2], "router": "per-set"},
  "data": {"mean": [0.5, 0.25], "std": [], "augment": false, "test_images": ""},
  "train": {"lr": 1e-5, "max_steps": -3, "device": "cuda:0", "cuda_graph": true, "note": null}
})"));
  const auto from_yaml = read_config_file(write("run.yml", R"(# the same run
model:
  embed_dim: 128
  mlp_ratio: 2.0
  name: vit
ffn:
  kind: exfusion
  layers: [0, 2]
  router: per-set
data:
  mean:
    - 0.5
    - 0.25
  std: []
  augment: false
  test_images: ""
train:
  lr: 1e-5
  max_steps: -3
  device: cuda:0
  cuda_graph: true
  note: ~
)"));
  EXPECT_EQ(from_yaml, from_json);
  EXPECT_TRUE(from_yaml["model"]["embed_dim"].is_number_integer());
  EXPECT_TRUE(from_yaml["model"]["mlp_ratio"].is_number_float());
  EXPECT_EQ(from_yaml["train"]["lr"].get<double>(), 1e-5);  // exact: the same decimal text
}

TEST_F(ConfigFile, YamlPlainScalarsFollowTheCoreSchema) {
  const auto config = read_yaml(R"(
bools: [true, True, TRUE, false, False, FALSE]
nulls: [null, Null, NULL, ~]
empty:
ints: [0, -7, +7, 007, 0o17, 0x1F, -9223372036854775808]
floats: [1.5, -0.5, .5, 5., 1e-5, 1E+3, -2.5e-3]
strings: [yes, no, on, off, 1_000, 0b101, 1.2.3, inf, nan, cuda:0, hello world]
)");
  EXPECT_EQ(config["bools"], (json{true, true, true, false, false, false}));
  EXPECT_EQ(config["nulls"], (json{nullptr, nullptr, nullptr, nullptr}));
  EXPECT_TRUE(config["empty"].is_null());
  EXPECT_EQ(config["ints"], (json{0, -7, 7, 7, 15, 31, INT64_MIN}));
  for (const auto& value : config["ints"]) EXPECT_TRUE(value.is_number_integer()) << value;
  EXPECT_EQ(config["floats"], (json{1.5, -0.5, 0.5, 5.0, 1e-5, 1e3, -2.5e-3}));
  for (const auto& value : config["floats"]) EXPECT_TRUE(value.is_number_float()) << value;
  EXPECT_EQ(config["strings"], (json{"yes", "no", "on", "off", "1_000", "0b101", "1.2.3", "inf",
                                     "nan", "cuda:0", "hello world"}));
}

TEST_F(ConfigFile, YamlQuotedAndBlockScalarsStayStrings) {
  const auto config = read_yaml(R"(
a: "5"
b: 'true'
c: "null"
d: ''
e: !!str 12
f: |
  two
  lines
g: ".inf"
"7": quoted key
)");
  EXPECT_EQ(config, (json{{"a", "5"},
                          {"b", "true"},
                          {"c", "null"},
                          {"d", ""},
                          {"e", "12"},
                          {"f", "two\nlines\n"},
                          {"g", ".inf"},
                          {"7", "quoted key"}}));
}

TEST_F(ConfigFile, YamlRejectsInfiniteAndNanValues) {
  EXPECT_EQ(yaml_error("train:\n  lr: .inf\n"),
            dir_.string() +
                "/c.yaml:2: train.lr = .inf: expected a finite number (.inf and .nan are not "
                "accepted)");
  EXPECT_EQ(yaml_error("mean: [1, -.Inf]\n"),
            dir_.string() +
                "/c.yaml:1: mean[1] = -.Inf: expected a finite number (.inf and .nan are not "
                "accepted)");
  EXPECT_EQ(yaml_error("x: .NaN\n"),
            dir_.string() +
                "/c.yaml:1: x = .NaN: expected a finite number (.inf and .nan are not accepted)");
  EXPECT_EQ(yaml_error("x: 9223372036854775808\n"),
            dir_.string() + "/c.yaml:1: x = 9223372036854775808: integer out of range");
  EXPECT_EQ(yaml_error("x: 1e999\n"), dir_.string() + "/c.yaml:1: x = 1e999: number out of range");
}

TEST_F(ConfigFile, YamlErrorsNameTheFileAndLine) {
  const auto file = dir_.string() + "/c.yaml";
  // A syntax error: yaml-cpp's message, at its line.
  const auto syntax = yaml_error("model:\n  depth: 4\n  heads: [1, 2\n");
  EXPECT_EQ(syntax.rfind(file + ":", 0), 0u) << syntax;
  EXPECT_NE(syntax.find(file + ":4: "), std::string::npos) << syntax;
  EXPECT_EQ(yaml_error("model:\n  depth: 4\n  depth: 5\n"),
            file + ":3: duplicate key 'model.depth'");
  EXPECT_EQ(yaml_error("a: 1\n? [x, y]\n: 2\n"), file + ":2: a mapping key must be a scalar");
  EXPECT_EQ(yaml_error("a: 1\n---\nb: 2\n"), file + ":2: expected one YAML document");
  EXPECT_EQ(yaml_error("a: !!binary aGk=\n"),
            file + ":1: a: unsupported tag 'tag:yaml.org,2002:binary'");
  EXPECT_TRUE(read_yaml("").is_null());
  EXPECT_TRUE(read_yaml("# only a comment\n").is_null());
}

TEST_F(ConfigFile, JsonErrorsNameTheFileAndLine) {
  const auto path = write("bad.json", "{\n  \"a\": 1,\n  \"b\": \n}\n");
  const auto error = error_of([&] { read_config_file(path); });
  EXPECT_EQ(error.rfind(path.string() + ": not valid JSON: parse error at line 4, column 1: ", 0),
            0u)
      << error;
}

// The bad-input probe's config cases (issue 13): nesting and aliases are bounded, duplicate
// JSON keys are errors as duplicate YAML keys already were, long values are quoted briefly.
TEST_F(ConfigFile, NestingIsBoundedInJsonAndYaml) {
  const auto json_path = write("deep.json", "{\"a\": " + std::string(100000, '[') + "}");
  EXPECT_EQ(error_of([&] {
              read_config_file(json_path);
            }).rfind(json_path.string() + ": nested deeper than 64 levels at a", 0),
            0u);
  // yaml-cpp stops its own recursion at 2000 levels; ours stops at 64 either way.
  const auto flow = yaml_error("a: " + std::string(100, '[') + std::string(100, ']') + "\n");
  EXPECT_NE(flow.find("c.yaml:1: nested deeper than 64 levels at a"), std::string::npos) << flow;
  const auto beyond_yaml_cpp = yaml_error("a: " + std::string(100000, '[') + "\n");
  EXPECT_EQ(beyond_yaml_cpp.rfind(dir_.string() + "/c.yaml:", 0), 0u) << beyond_yaml_cpp;
  std::string block;
  for (int i = 0; i < 70; ++i) block += std::string(2 * i, ' ') + "k" + std::to_string(i) + ":\n";
  EXPECT_NE(yaml_error(block).find("nested deeper than 64 levels at k0.k1.k2"), std::string::npos);
}

TEST_F(ConfigFile, YamlAliasesCannotExpandWithoutBound) {
  // Nine levels of ten aliases each: a billion values from a dozen lines.
  std::string text = "a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n";
  for (int i = 1; i <= 9; ++i) {
    const auto previous = "*a" + std::to_string(i - 1);
    text += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) text += (k ? ", " : "") + previous;
    text += "]\n";
  }
  EXPECT_NE(yaml_error(text).find("more than 100000 values (aliases expanding without bound?)"),
            std::string::npos);
  // A few aliases, as configs use them, still read.
  EXPECT_EQ(read_yaml("base: &lr 0.001\ntrain: {lr: *lr}\n")["train"]["lr"], json(0.001));
}

TEST_F(ConfigFile, JsonDuplicateKeysAreErrors) {
  const auto path = write("dup.json", R"({"train": {"lr": 0.1, "lr": 0.2}})");
  EXPECT_EQ(error_of([&] { read_config_file(path); }),
            path.string() + ": duplicate key 'train.lr'");
}

TEST_F(ConfigFile, LongNumbersAreQuotedBriefly) {
  const auto error = yaml_error("x: 1" + std::string(100000, '0') + "\n");
  EXPECT_NE(error.find("x = 1000"), std::string::npos) << error.substr(0, 200);
  EXPECT_NE(error.find("...: integer out of range"), std::string::npos) << error.substr(0, 200);
  EXPECT_LT(error.size(), 300u);
}

TEST_F(ConfigFile, UnreadableFilesAndUnknownExtensions) {
  const auto missing = dir_ / "missing.yaml";
  EXPECT_EQ(error_of([&] { read_config_file(missing); }),
            missing.string() + ": cannot open the file");
  const auto toml = write("run.toml", "a = 1\n");
  EXPECT_EQ(error_of([&] { read_config_file(toml); }),
            toml.string() + ": unknown config file type; expected a .json, .yaml or .yml file");
  EXPECT_EQ(read_config_file(write("UPPER.YAML", "a: 1\n")), (json{{"a", 1}}));
}

TEST_F(ConfigFile, ToYamlIsBlockStyleInTheJsonsOrder) {
  const json config = {{"train", {{"epochs", 5}, {"lr", 0.002}, {"device", "auto"}}},
                       {"ffn", {{"layers", {0, 2}}, {"kind", "moe"}, {"mean", json::array()}}}};
  EXPECT_EQ(to_yaml(config),
            "ffn:\n"
            "  kind: moe\n"
            "  layers:\n"
            "    - 0\n"
            "    - 2\n"
            "  mean: []\n"
            "train:\n"
            "  device: auto\n"
            "  epochs: 5\n"
            "  lr: 0.002\n");
}

TEST_F(ConfigFile, ToYamlReadsBackEqual) {
  const json config = {
      {"strings",
       {"true",
        "False",
        "null",
        "~",
        "5",
        "-3",
        "1e-5",
        ".inf",
        ".nan",
        "",
        " padded ",
        "a: b",
        "# not a comment",
        "- x",
        "cuda:0",
        "quote \" and \\ backslash",
        "two\nlines",
        "tab\t",
        "δ = 0.95",
        "[1, 2]",
        "{a: 1}",
        "*alias",
        "&anchor",
        "!tag",
        "@",
        "`",
        "%",
        "yes",
        "/usr/share/datasets/fashion-mnist",
        "per-set"}},
      {"numbers", {0, -7, INT64_MIN, INT64_MAX, 1.0, -0.5, 1e-5, 2.5e300, 0.1}},
      {"flags", {true, false, nullptr}},
      {"nested", {{"lists", {{1, 2}, json::array(), {{"k", "v"}}}}, {"empty", json::object()}}},
      {"odd keys", {{"5", 1}, {"true", 2}, {"", 3}, {"a: b", 4}}},
  };
  const auto text = to_yaml(config);
  const auto back = read_config_file(write("back.yaml", text));
  EXPECT_EQ(back, config) << text;
  EXPECT_TRUE(back["numbers"][4].is_number_float()) << text;  // 1.0 stays a double
  EXPECT_EQ(read_config_file(write("scalar.yaml", to_yaml(json(0.25)))), json(0.25));
}

TEST_F(ConfigFile, ShippedConfigsRoundTripThroughYaml) {
  size_t count = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(EXFUSION_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    const auto config = read_config_file(entry.path());
    const auto yaml = write(entry.path().stem().string() + ".roundtrip.yaml", to_yaml(config));
    EXPECT_EQ(read_config_file(yaml), config) << entry.path();
    ++count;
  }
  EXPECT_GT(count, 0u);
}

}  // namespace
}  // namespace exfusion::config
