// Config fields declared once (config/fields.h): a sample section with every field type, a
// nested section, a TORCH_ARG accessor, a custom section, a preset and validate() is read,
// written and described, and every error names its source and the key's full dotted path.
#include <gtest/gtest.h>
#include <torch/arg.h>

#include <algorithm>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "../support/input_errors.h"
#include "exfusion/config/fields.h"
#include "exfusion/util/error.h"

namespace exfusion::config {
namespace {

using nlohmann::json;

enum class Shape { kCircle, kSquare, kTriangle };

// TORCH_ARG options, as LibTorch-style option classes hold them.
struct Knobs {
  TORCH_ARG(double, momentum) = 0.95;
};

struct Inner {
  int64_t depth = 2;
  double ratio = 0.5;
  Knobs knobs;

  template <class Fields>
  void fields(Fields& f) {
    f("depth", depth, "layers", at_least<int64_t>(1));
    f("ratio", ratio, "a ratio", in_range<double>(0, 1, /*high_open=*/true));
    f("momentum", knobs.momentum(), "δ", in_range<double>(0, 1));
  }
};

// The parts of a custom section: which keys apply depends on its "kind".
struct Cosine {
  double warmup = 0.5;
  template <class Fields>
  void fields(Fields& f) {
    f("warmup", warmup, "warm-up epochs", non_negative<double>());
  }
};
struct Steps {
  std::vector<int64_t> milestones{10, 20};
  double gamma = 0.1;
  template <class Fields>
  void fields(Fields& f) {
    f("milestones", milestones, "epochs where the rate drops");
    f("gamma", gamma, "the drop factor", positive<double>());
  }
};
struct Kind {
  std::string kind = "cosine";
  template <class Fields>
  void fields(Fields& f) {
    f("kind", kind, "cosine or steps", one_of({"cosine", "steps"}));
  }
};

struct Schedule {
  Kind kind;
  Cosine cosine;
  Steps steps;

  bool is_cosine() const { return kind.kind == "cosine"; }
  // The kind first: it decides which of the other keys belong here.
  void apply(const json& patch, const Location& at) {
    std::set<std::string> others;
    if (patch.is_object()) {
      for (const auto& item : patch.items()) others.insert(item.key());
    }
    others.erase("kind");
    config::apply(kind, patch, at, others);
    if (is_cosine()) {
      apply_part(cosine, patch, at);
    } else {
      apply_part(steps, patch, at);
    }
  }
  template <class Part>
  void apply_part(Part& part, const json& patch, const Location& at) {
    for (const auto& item : patch.items()) {
      const auto& key = item.key();
      if (!has_field<Part>(key) && (has_field<Cosine>(key) || has_field<Steps>(key))) {
        fail(at, "'" + at.key_path(key) + "' is not a key of kind " + kind.kind);
      }
    }
    config::apply(part, patch, at, {"kind"});
  }
  json to_json() const {
    auto out = is_cosine() ? config::to_json(cosine) : config::to_json(steps);
    out["kind"] = kind.kind;
    return out;
  }
  void describe(std::vector<FieldHelp>& out, const std::string& prefix) const {
    const auto rows = config::describe(kind, prefix);
    const auto part =
        is_cosine() ? config::describe(cosine, prefix) : config::describe(steps, prefix);
    out.insert(out.end(), rows.begin(), rows.end());
    out.insert(out.end(), part.begin(), part.end());
  }
};

const Choices<Shape> kShapes{
    {{"circle", Shape::kCircle}, {"square", Shape::kSquare}, {"triangle", Shape::kTriangle}}};
const Choices<bool> kRouters{{{"shared", false}, {"per-set", true}}};

struct Sample {
  bool flag = false;
  int64_t count = 3;
  int64_t limit = 0;
  double rate = 0.1;
  std::string precision = "auto";
  std::vector<int64_t> layers;
  std::vector<double> weights{1.0, 2.5};
  Shape shape = Shape::kCircle;
  bool per_set = false;
  Inner inner;
  Schedule schedule;

  template <class Fields>
  void fields(Fields& f) {
    f("flag", flag, "a switch");
    f("count", count, "how many", at_least<int64_t>(1));
    f("limit", limit, "a step limit",
      Check<int64_t>{"0 (no limit) or a positive step count", [](int64_t v) { return v >= 0; }});
    f("rate", rate, "the rate", positive<double>());
    f("precision", precision, "numeric precision", one_of({"auto", "fp32", "bf16"}));
    f("layers", layers, "blocks; empty means all");
    f("weights", weights, "per-class weights");
    f("shape", shape, "the shape", kShapes,
      Check<Shape>{"not a triangle", [](Shape s) { return s != Shape::kTriangle; }});
    f("router", per_set, "one router or one per set", kRouters);
    f("inner", inner, "a nested section");
    f("schedule", schedule, "a custom section");
  }

  void validate(const Location& at) const {
    if (rate > inner.ratio) fail(at, "rate", rate, "at most inner.ratio");
  }

  void apply_preset(const std::string& name, const Location& at) {
    if (name != "big") fail(at, "preset", name, "big");
    count = 100;
    inner.depth = 8;
    inner.ratio = 0.9;
  }
};

using testing::error_of;

std::string apply_error(const json& patch) {
  Sample sample;
  return error_of([&] { apply(sample, patch, {"test.yaml", "run"}); });
}

TEST(FieldsLocation, ChildAndKeyPath) {
  const Location root{"defaults", ""};
  EXPECT_EQ(root.key_path("train"), "train");
  const auto train = root.child("train");
  EXPECT_EQ(train.source, "defaults");
  EXPECT_EQ(train.path, "train");
  EXPECT_EQ(train.key_path("lr"), "train.lr");
  EXPECT_EQ(train.child("lr").path, "train.lr");
  EXPECT_EQ(train.key_path(""), "train");
}

TEST(FieldsLocation, FailNamesSourcePathAndValue) {
  EXPECT_EQ(error_of([] {
              fail({"a.json", "train"}, "lr", 0, "a positive number");
            }),
            "a.json: train.lr = 0: expected a positive number");
  EXPECT_EQ(error_of([] {
              fail({"a.json", ""}, "", 5, "an object");
            }),
            "a.json: 5: expected an object");
  EXPECT_EQ(error_of([] {
              fail({"--set x=1", "x"}, "something else");
            }),
            "--set x=1: something else");
}

TEST(FieldsToJson, WritesEveryFieldWithChoiceNames) {
  const json expected = {{"flag", false},
                         {"count", 3},
                         {"limit", 0},
                         {"rate", 0.1},
                         {"precision", "auto"},
                         {"layers", json::array()},
                         {"weights", {1.0, 2.5}},
                         {"shape", "circle"},
                         {"router", "shared"},
                         {"inner", {{"depth", 2}, {"ratio", 0.5}, {"momentum", 0.95}}},
                         {"schedule", {{"kind", "cosine"}, {"warmup", 0.5}}}};
  EXPECT_EQ(to_json(Sample{}), expected);
}

TEST(FieldsApply, RoundTripGivesEqualValues) {
  Sample changed;
  changed.flag = true;
  changed.count = 7;
  changed.limit = 9;
  changed.rate = 0.25;
  changed.precision = "bf16";
  changed.layers = {0, 3};
  changed.weights = {0.5};
  changed.shape = Shape::kSquare;
  changed.per_set = true;
  changed.inner.depth = 5;
  changed.inner.ratio = 0.75;
  changed.inner.knobs.momentum(0.5);
  changed.schedule.kind.kind = "steps";
  changed.schedule.steps.milestones = {3};
  changed.schedule.steps.gamma = 0.5;

  Sample read;
  apply(read, to_json(changed), {"round trip", ""});
  EXPECT_EQ(to_json(read), to_json(changed));
  // Field by field too: doubles exactly (they go through JSON's shortest round-trip text).
  EXPECT_TRUE(read.flag);
  EXPECT_EQ(read.count, 7);
  EXPECT_EQ(read.limit, 9);
  EXPECT_EQ(read.rate, 0.25);
  EXPECT_EQ(read.precision, "bf16");
  EXPECT_EQ(read.layers, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(read.weights, (std::vector<double>{0.5}));
  EXPECT_EQ(read.shape, Shape::kSquare);
  EXPECT_TRUE(read.per_set);
  EXPECT_EQ(read.inner.depth, 5);
  EXPECT_EQ(read.inner.ratio, 0.75);
  EXPECT_EQ(read.inner.knobs.momentum(), 0.5);
  EXPECT_EQ(read.schedule.kind.kind, "steps");
  EXPECT_EQ(read.schedule.steps.milestones, (std::vector<int64_t>{3}));
  EXPECT_EQ(read.schedule.steps.gamma, 0.5);
}

TEST(FieldsApply, PatchChangesOnlyGivenKeys) {
  Sample sample;
  apply(sample, {{"count", 4}, {"inner", {{"momentum", 0.5}}}, {"router", "per-set"}},
        {"--set", ""});
  auto expected = to_json(Sample{});
  expected["count"] = 4;
  expected["inner"]["momentum"] = 0.5;
  expected["router"] = "per-set";
  EXPECT_EQ(to_json(sample), expected);

  apply(sample, json::object(), {"empty", ""});
  EXPECT_EQ(to_json(sample), expected);
}

TEST(FieldsApply, IntegersAreAcceptedForDoubles) {
  Sample sample;
  apply(sample, {{"inner", {{"momentum", 1}}}, {"weights", {1, 2}}}, {"t", ""});
  EXPECT_EQ(sample.inner.knobs.momentum(), 1.0);
  EXPECT_EQ(sample.weights, (std::vector<double>{1.0, 2.0}));
  EXPECT_EQ(error_of([&] {
              apply(sample, {{"count", 2.0}}, {"t", ""});
            }),
            "t: count = 2.0: expected an integer");
}

TEST(FieldsApply, WrongTypesNameSourcePathAndExpectation) {
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"flag", 1}}, "test.yaml: run.flag = 1: expected true or false"},
      {{{"count", "3"}}, "test.yaml: run.count = \"3\": expected an integer"},
      {{{"count", 18446744073709551615ull}},
       "test.yaml: run.count = 18446744073709551615: expected an integer"},
      {{{"rate", "fast"}}, "test.yaml: run.rate = \"fast\": expected a number"},
      {{{"precision", 16}}, "test.yaml: run.precision = 16: expected a string"},
      {{{"layers", {1, 2.5}}}, "test.yaml: run.layers = [1,2.5]: expected a list of integers"},
      {{{"layers", 1}}, "test.yaml: run.layers = 1: expected a list of integers"},
      {{{"weights", {1, "x"}}}, "test.yaml: run.weights = [1,\"x\"]: expected a list of numbers"},
      {{{"shape", 1}}, "test.yaml: run.shape = 1: expected circle, square or triangle"},
      {{{"router", true}}, "test.yaml: run.router = true: expected shared or per-set"},
      {{{"inner", 3}}, "test.yaml: run.inner = 3: expected an object"},
  };
  for (const auto& [patch, message] : cases) EXPECT_EQ(apply_error(patch), message) << patch;
}

TEST(FieldsApply, NestedErrorsNameFullDottedPath) {
  EXPECT_EQ(apply_error({{"inner", {{"depth", 0}}}}),
            "test.yaml: run.inner.depth = 0: expected at least 1");
  EXPECT_EQ(apply_error({{"inner", {{"momentum", "high"}}}}),
            "test.yaml: run.inner.momentum = \"high\": expected a number");
  EXPECT_EQ(apply_error({{"schedule", {{"warmup", -1}}}}),
            "test.yaml: run.schedule.warmup = -1: expected a non-negative number");
  EXPECT_EQ(apply_error({{"schedule", {{"kind", "steps"}, {"gamma", 0}}}}),
            "test.yaml: run.schedule.gamma = 0: expected a positive number");
  Sample sample;
  EXPECT_EQ(error_of([&] {
              apply(sample, {{"x", 1}}, {"defaults", ""});
            }),
            "defaults: unknown key 'x'; known keys: flag, count, limit, rate, precision, layers, "
            "weights, shape, router, inner, schedule, preset");
}

TEST(FieldsApply, UnknownKeyInNestedSectionListsItsKeys) {
  EXPECT_EQ(apply_error({{"inner", {{"dept", 3}}}}),
            "test.yaml: unknown key 'run.inner.dept'; known keys: depth, ratio, momentum");
  // The custom section's own message for a key of the other kind.
  EXPECT_EQ(apply_error({{"schedule", {{"gamma", 0.5}}}}),
            "test.yaml: 'run.schedule.gamma' is not a key of kind cosine");
  EXPECT_EQ(apply_error({{"schedule", {{"gama", 0.5}}}}),
            "test.yaml: unknown key 'run.schedule.gama'; known keys: warmup, kind");
}

TEST(FieldsApply, ChoicesAcceptTheirNamesOnly) {
  Sample sample;
  apply(sample, {{"shape", "square"}, {"router", "per-set"}}, {"t", ""});
  EXPECT_EQ(sample.shape, Shape::kSquare);
  EXPECT_TRUE(sample.per_set);
  EXPECT_EQ(to_json(sample)["router"], "per-set");
  EXPECT_EQ(apply_error({{"shape", "Square"}}),
            "test.yaml: run.shape = \"Square\": expected circle, square or triangle");
  // A Check beside Choices runs on the chosen value.
  EXPECT_EQ(apply_error({{"shape", "triangle"}}),
            "test.yaml: run.shape = \"triangle\": expected not a triangle");
}

TEST(FieldsApply, ChecksRejectValuesOutOfRange) {
  EXPECT_EQ(apply_error({{"count", 0}}), "test.yaml: run.count = 0: expected at least 1");
  EXPECT_EQ(apply_error({{"limit", -1}}),
            "test.yaml: run.limit = -1: expected 0 (no limit) or a positive step count");
  EXPECT_EQ(apply_error({{"rate", 0}}), "test.yaml: run.rate = 0: expected a positive number");
  EXPECT_EQ(apply_error({{"inner", {{"ratio", 1}}}}),
            "test.yaml: run.inner.ratio = 1: expected a value in [0, 1)");
  EXPECT_EQ(apply_error({{"inner", {{"momentum", 1.5}}}}),
            "test.yaml: run.inner.momentum = 1.5: expected a value in [0, 1]");
  EXPECT_EQ(apply_error({{"precision", "fp16"}}),
            "test.yaml: run.precision = \"fp16\": expected auto, fp32 or bf16");
  // Closed ends are in range.
  Sample sample;
  apply(sample, {{"inner", {{"momentum", 0}}}}, {"t", ""});
  EXPECT_EQ(sample.inner.knobs.momentum(), 0.0);
  apply(sample, {{"inner", {{"momentum", 1}}}}, {"t", ""});
  EXPECT_EQ(sample.inner.knobs.momentum(), 1.0);
}

TEST(FieldsChecks, ExpectedTexts) {
  EXPECT_EQ(at_least<int64_t>(1).expected, "at least 1");
  EXPECT_EQ(at_least<double>(1e-5).expected, "at least 1e-05");
  EXPECT_EQ(positive<double>().expected, "a positive number");
  EXPECT_EQ(positive<int64_t>().expected, "a positive integer");
  EXPECT_EQ(non_negative<double>().expected, "a non-negative number");
  EXPECT_EQ(non_negative<int64_t>().expected, "a non-negative integer");
  EXPECT_EQ(in_range<double>(0, 1, true).expected, "a value in [0, 1)");
  EXPECT_EQ(in_range<double>(0.5, 2).expected, "a value in [0.5, 2]");
  EXPECT_EQ(one_of({"auto", "fp32", "bf16"}).expected, "auto, fp32 or bf16");
  EXPECT_EQ(join_or({"sw"}), "sw");
  EXPECT_EQ(join_or({"sw", "dw"}), "sw or dw");
  EXPECT_TRUE(in_range<double>(0, 1, true).ok(0.0));
  EXPECT_FALSE(in_range<double>(0, 1, true).ok(1.0));
  EXPECT_TRUE(in_range<double>(0, 1).ok(1.0));
  EXPECT_FALSE(in_range<double>(0, 1).ok(-1e-12));
  EXPECT_FALSE(one_of({"a"}).ok("b"));
}

TEST(FieldsApply, ValidateRunsAfterApply) {
  EXPECT_EQ(apply_error({{"rate", 0.6}}),
            "test.yaml: run.rate = 0.6: expected at most inner.ratio");
  Sample sample;
  apply(sample, {{"rate", 0.6}, {"inner", {{"ratio", 0.7}}}}, {"t", ""});  // checked together
  EXPECT_EQ(sample.rate, 0.6);
}

TEST(FieldsApply, FailedApplyLeavesSectionUnchanged) {
  Sample sample;
  const auto before = to_json(sample);
  EXPECT_NE(error_of([&] {
              apply(sample, {{"count", 9}, {"inner", {{"depth", 0}}}}, {"t", ""});
            }),
            "no error");
  EXPECT_NE(error_of([&] { apply(sample, {{"count", 9}, {"rate", 0.9}}, {"t", ""}); }), "no error");
  EXPECT_EQ(to_json(sample), before);
}

TEST(FieldsApply, PresetAppliesFirstThenTheOtherKeys) {
  Sample sample;
  apply(sample, {{"preset", "big"}, {"count", 5}, {"rate", 0.8}}, {"t", ""});
  EXPECT_EQ(sample.count, 5);        // the explicit key wins over the preset
  EXPECT_EQ(sample.inner.depth, 8);  // the preset's
  EXPECT_EQ(sample.rate, 0.8);       // valid only with the preset's inner.ratio 0.9
  EXPECT_FALSE(to_json(sample).contains("preset"));
  EXPECT_EQ(apply_error({{"preset", "huge"}}), "test.yaml: run.preset = \"huge\": expected big");
  EXPECT_EQ(apply_error({{"preset", 1}}), "test.yaml: run.preset = 1: expected a preset name");
  // Sections without apply_preset have no "preset" key.
  Inner inner;
  EXPECT_EQ(error_of([&] {
              apply(inner, {{"preset", "big"}}, {"t", "inner"});
            }),
            "t: unknown key 'inner.preset'; known keys: depth, ratio, momentum");
}

TEST(FieldsApply, HandledKeysAreSkipped) {
  Inner inner;
  apply(inner, {{"depth", 4}, {"kind", "x"}, {"ratio", "left to the caller"}}, {"t", ""},
        {"kind", "ratio"});
  EXPECT_EQ(inner.depth, 4);
  EXPECT_EQ(inner.ratio, 0.5);
}

TEST(FieldsApply, CustomSectionReadsItsKind) {
  Sample sample;
  apply(sample, {{"schedule", {{"kind", "steps"}, {"milestones", {5}}}}}, {"t", ""});
  EXPECT_EQ(sample.schedule.kind.kind, "steps");
  EXPECT_EQ(sample.schedule.steps.milestones, (std::vector<int64_t>{5}));
  EXPECT_EQ(to_json(sample)["schedule"],
            (json{{"kind", "steps"}, {"milestones", {5}}, {"gamma", 0.1}}));
  EXPECT_EQ(apply_error({{"schedule", {{"kind", "linear"}}}}),
            "test.yaml: run.schedule.kind = \"linear\": expected cosine or steps");
  EXPECT_EQ(apply_error({{"schedule", 1}}), "test.yaml: run.schedule = 1: expected an object");
}

TEST(FieldsKeys, KeysOfInDeclarationOrder) {
  EXPECT_EQ(keys_of<Sample>(),
            (std::vector<std::string>{"flag", "count", "limit", "rate", "precision", "layers",
                                      "weights", "shape", "router", "inner", "schedule"}));
  EXPECT_EQ(keys_of<Inner>(), (std::vector<std::string>{"depth", "ratio", "momentum"}));
  EXPECT_TRUE(has_field<Steps>("gamma"));
  EXPECT_FALSE(has_field<Cosine>("gamma"));
}

TEST(FieldsDescribe, RowsInDeclarationOrderWithCurrentValues) {
  Sample sample;
  sample.count = 4;
  const auto rows = describe(sample, "run");
  std::vector<std::string> paths;
  for (const auto& row : rows) paths.push_back(row.path);
  EXPECT_EQ(paths,
            (std::vector<std::string>{
                "run.flag", "run.count", "run.limit", "run.rate", "run.precision", "run.layers",
                "run.weights", "run.shape", "run.router", "run.inner.depth", "run.inner.ratio",
                "run.inner.momentum", "run.schedule.kind", "run.schedule.warmup"}));
  const auto row = [&](const std::string& path) {
    return *std::find_if(rows.begin(), rows.end(), [&](const auto& r) { return r.path == path; });
  };
  EXPECT_EQ(row("run.count").type, "integer");
  EXPECT_EQ(row("run.count").default_value, "4");
  EXPECT_EQ(row("run.count").help, "how many");
  EXPECT_EQ(row("run.count").expected, "at least 1");
  EXPECT_EQ(row("run.flag").type, "bool");
  EXPECT_EQ(row("run.flag").expected, "");
  EXPECT_EQ(row("run.precision").default_value, "\"auto\"");
  EXPECT_EQ(row("run.layers").type, "list of integers");
  EXPECT_EQ(row("run.weights").type, "list of numbers");
  EXPECT_EQ(row("run.weights").default_value, "[1.0,2.5]");
  EXPECT_EQ(row("run.shape").type, "circle, square or triangle");
  EXPECT_EQ(row("run.shape").default_value, "\"circle\"");
  EXPECT_EQ(row("run.shape").expected, "not a triangle");
  EXPECT_EQ(row("run.router").type, "shared or per-set");
  EXPECT_EQ(row("run.inner.ratio").type, "number");
  EXPECT_EQ(row("run.inner.ratio").expected, "a value in [0, 1)");
  EXPECT_EQ(row("run.schedule.kind").expected, "cosine or steps");
  EXPECT_EQ(describe(Inner{}, "")[0].path, "depth");
}

TEST(FieldsDescribe, FormatHelpAlignsOneKeyPerLine) {
  const std::vector<FieldHelp> rows = {
      {"train.epochs", "integer", "5", "training epochs", "at least 1"},
      {"train.lr", "number", "0.002", "learning rate", ""},
      {"x", "bool", "false", "", ""}};
  EXPECT_EQ(format_help(rows),
            "train.epochs  integer  5      training epochs [at least 1]\n"
            "train.lr      number   0.002  learning rate\n"
            "x             bool     false\n");
  EXPECT_EQ(format_help({}), "");
}

TEST(FieldsParseAssignment, ValuesAsJsonElseAsPlainStrings) {
  EXPECT_EQ(parse_assignment("train.lr=0.001"), (json{{"train", {{"lr", 0.001}}}}));
  EXPECT_EQ(parse_assignment("train.epochs=3"), (json{{"train", {{"epochs", 3}}}}));
  EXPECT_EQ(parse_assignment("a.b.c=true"), (json{{"a", {{"b", {{"c", true}}}}}}));
  EXPECT_EQ(parse_assignment("ffn.layers=[0, 2]"), (json{{"ffn", {{"layers", {0, 2}}}}}));
  EXPECT_EQ(parse_assignment("ffn={\"kind\": \"moe\"}"), (json{{"ffn", {{"kind", "moe"}}}}));
  EXPECT_EQ(parse_assignment("train.device=cuda:0"), (json{{"train", {{"device", "cuda:0"}}}}));
  EXPECT_EQ(parse_assignment("train.device=\"5\""), (json{{"train", {{"device", "5"}}}}));
  EXPECT_EQ(parse_assignment("data.dir=a=b"), (json{{"data", {{"dir", "a=b"}}}}));
  EXPECT_EQ(parse_assignment("data.dir="), (json{{"data", {{"dir", ""}}}}));
  EXPECT_EQ(parse_assignment("seed=7"), (json{{"seed", 7}}));
}

TEST(FieldsParseAssignment, MalformedAssignmentsAreRejected) {
  for (const std::string bad : {"train.lr", "=3", ".lr=3", "train.=3", "train..lr=3", ""}) {
    EXPECT_EQ(error_of([&] { parse_assignment(bad); }),
              "--set " + bad + ": expected key.path=value");
  }
}

}  // namespace
}  // namespace exfusion::config
