// Config sections that declare each field once: a section's `fields()` member template names
// every field with its help text and checks, and the visitors here read (strictly), write
// and describe it, so defaults, JSON, errors and --help cannot drift apart.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace exfusion::config {

// Where a value came from and where it sits in the config tree.
struct Location {
  std::string source;  // a file name, "--set train.lr=0", "defaults", ...
  std::string path;    // dotted path of the section, "" at the root

  Location child(const std::string& key) const;  // path "train" + "lr" -> "train.lr"
  // The dotted path of one key in this section; key_path("") is the section's own path.
  std::string key_path(const std::string& key) const;
};

// Throws InputError "<source>: <path> = <value.dump()>: expected <expected>" (at the root with
// an empty key: "<source>: <value.dump()>: expected <expected>").
[[noreturn]] void fail(const Location& at, const std::string& key, const nlohmann::json& value,
                       const std::string& expected);
[[noreturn]] void fail(const Location& at, const std::string& message);  // "<source>: <message>"

// A condition on a field's value; `expected` is what the error says the value should be.
template <class T>
struct Check {
  std::string expected;
  std::function<bool(const T&)> ok;
};

// The names a value is written as; the expected text lists them ("sw, dw or mb").
template <class T>
struct Choices {
  std::vector<std::pair<std::string, T>> names;
  // The name `value` is written as (the first, if several name it); "" for none.
  std::string name_of(const T& value) const {
    for (const auto& [name, named] : names) {
      if (named == value) return name;
    }
    return {};
  }
};

// "a", "a or b", "a, b or c".
std::string join_or(const std::vector<std::string>& words);

namespace detail {
std::string number_text(int64_t value);
std::string number_text(double value);  // shortest text that reads back equal: 0, 0.5, 1e-05
}  // namespace detail

template <class T>
Check<T> at_least(T low) {
  return {"at least " + detail::number_text(low), [low](const T& v) { return v >= low; }};
}
template <class T>
Check<T> positive() {
  return {std::is_integral_v<T> ? "a positive integer" : "a positive number",
          [](const T& v) { return v > 0; }};
}
template <class T>
Check<T> non_negative() {
  return {std::is_integral_v<T> ? "a non-negative integer" : "a non-negative number",
          [](const T& v) { return v >= 0; }};
}
// [low, high], or [low, high) when high_open.
template <class T>
Check<T> in_range(T low, T high, bool high_open = false) {
  return {"a value in [" + detail::number_text(low) + ", " + detail::number_text(high) +
              (high_open ? ")" : "]"),
          [=](const T& v) { return v >= low && (high_open ? v < high : v <= high); }};
}
// A string that is one of `names`: expected "auto, fp32 or bf16".
Check<std::string> one_of(std::vector<std::string> names);

// One row of --help: a key's dotted path, its type, its default (as JSON) and what it does.
struct FieldHelp {
  std::string path, type, default_value, help;
  std::string expected;  // the field's checks ("at least 1"), "; "-joined; "" when none
};

// An aligned table, one key per line: path, type, default, help (and expected in brackets).
std::string format_help(const std::vector<FieldHelp>& fields);

// `key.path=value` as a patch {"key": {"path": value}}: the value as JSON when it parses
// (numbers, true/false, lists, objects, quoted strings), else as a plain string. Throws
// InputError "--set X: expected key.path=value" without '=', with an empty key or path part.
nlohmann::json parse_assignment(const std::string& assignment);

namespace detail {

// Field visitors: each section's fields(f) calls f(name, member, help, extras...).
struct KeyLister;

template <class S, class = void>
struct has_fields : std::false_type {};
template <class S>
struct has_fields<S, std::void_t<decltype(std::declval<S&>().fields(std::declval<KeyLister&>()))>>
    : std::true_type {};

template <class S, class = void>
struct has_validate : std::false_type {};
template <class S>
struct has_validate<
    S, std::void_t<decltype(std::declval<const S&>().validate(std::declval<const Location&>()))>>
    : std::true_type {};

template <class S, class = void>
struct has_preset : std::false_type {};
template <class S>
struct has_preset<S, std::void_t<decltype(std::declval<S&>().apply_preset(
                         std::declval<const std::string&>(), std::declval<const Location&>()))>>
    : std::true_type {};

// A custom section reads, writes and describes itself.
template <class S, class = void>
struct is_custom : std::false_type {};
template <class S>
struct is_custom<
    S,
    std::void_t<decltype(std::declval<S&>().apply(std::declval<const nlohmann::json&>(),
                                                  std::declval<const Location&>())),
                decltype(std::declval<const S&>().to_json()),
                decltype(std::declval<const S&>().describe(std::declval<std::vector<FieldHelp>&>(),
                                                           std::declval<const std::string&>()))>>
    : std::true_type {};

template <class T>
constexpr bool is_plain_v =
    std::is_same_v<T, bool> || std::is_same_v<T, int64_t> || std::is_same_v<T, double> ||
    std::is_same_v<T, std::string> || std::is_same_v<T, std::vector<int64_t>> ||
    std::is_same_v<T, std::vector<double>>;

template <class T, class E>
struct is_extra_for : std::false_type {};
template <class T>
struct is_extra_for<T, Check<T>> : std::true_type {};
template <class T>
struct is_extra_for<T, Choices<T>> : std::true_type {};

template <class T, class... Extras>
constexpr bool has_choices_v = (std::is_same_v<Extras, Choices<T>> || ...);

// The field's kind, checked once for every visitor.
template <class T, class... Extras>
constexpr void check_field() {
  static_assert((is_extra_for<T, Extras>::value && ...),
                "a config field's extras are Check<T> and Choices<T> of the field's own type T");
  static_assert(((std::is_same_v<Extras, Choices<T>> ? 1 : 0) + ... + 0) <= 1,
                "a config field takes at most one Choices<T>");
  static_assert(
      has_choices_v<T, Extras...> || is_custom<T>::value || has_fields<T>::value || is_plain_v<T>,
      "a config field is bool, int64_t, double, std::string, std::vector<int64_t>, "
      "std::vector<double>, a section (fields() or custom), or has a Choices<T> extra");
}

template <class T>
const Choices<T>* pick_choices(const Choices<T>*, const Choices<T>& choices) {
  return &choices;
}
template <class T>
const Choices<T>* pick_choices(const Choices<T>* found, const Check<T>&) {
  return found;
}
template <class T, class... Extras>
const Choices<T>& choices_in(const Extras&... extras) {
  const Choices<T>* found = nullptr;
  ((found = pick_choices(found, extras)), ...);
  return *found;
}

template <class T>
std::vector<std::string> names_of(const Choices<T>& choices) {
  std::vector<std::string> names;
  for (const auto& entry : choices.names) names.push_back(entry.first);
  return names;
}

// The JSON type checks of the plain field types; each fails naming the key.
void read_plain(const nlohmann::json& value, const Location& at, const std::string& key, bool& out);
void read_plain(const nlohmann::json& value, const Location& at, const std::string& key,
                int64_t& out);
void read_plain(const nlohmann::json& value, const Location& at, const std::string& key,
                double& out);
void read_plain(const nlohmann::json& value, const Location& at, const std::string& key,
                std::string& out);
void read_plain(const nlohmann::json& value, const Location& at, const std::string& key,
                std::vector<int64_t>& out);
void read_plain(const nlohmann::json& value, const Location& at, const std::string& key,
                std::vector<double>& out);

const char* type_name(const bool&);
const char* type_name(const int64_t&);
const char* type_name(const double&);
const char* type_name(const std::string&);
const char* type_name(const std::vector<int64_t>&);
const char* type_name(const std::vector<double>&);

// Fails "unknown key '<path>'; known keys: ..." for the first key of `patch` not in `known`.
void reject_unknown_keys(const nlohmann::json& patch, const Location& at,
                         const std::vector<std::string>& known);

[[noreturn]] void unnamed_choice(const std::string& key);

template <class S>
void apply_into(S& section, const nlohmann::json& patch, const Location& at,
                const std::set<std::string>& handled);
template <class S>
void describe_into(const S& section, const std::string& prefix, std::vector<FieldHelp>& out);

struct KeyLister {
  std::vector<std::string> names;
  template <class T, class... Extras>
  void operator()(const std::string& name, T&, const std::string&, const Extras&...) {
    check_field<T, Extras...>();
    names.push_back(name);
  }
};

template <class T>
void run_check(const T& value, const nlohmann::json& given, const Location& at,
               const std::string& key, const Check<T>& check) {
  if (!check.ok(value)) fail(at, key, given, check.expected);
}
template <class T>
void run_check(const T&, const nlohmann::json&, const Location&, const std::string&,
               const Choices<T>&) {}

// Reads the fields present in a patch object, except the `handled` ones.
class Reader {
 public:
  Reader(const nlohmann::json& patch, const Location& at, const std::set<std::string>& handled)
      : patch_(patch), at_(at), handled_(handled) {}

  template <class T, class... Extras>
  void operator()(const std::string& name, T& member, const std::string&, const Extras&... extras) {
    check_field<T, Extras...>();
    const auto found = patch_.find(name);
    if (found == patch_.end() || handled_.count(name) != 0) return;
    const auto& given = *found;
    if constexpr (has_choices_v<T, Extras...>) {
      const auto& choices = choices_in<T>(extras...);
      const auto* entry =
          given.is_string() ? find(choices, given.template get<std::string>()) : nullptr;
      if (entry == nullptr) fail(at_, name, given, join_or(names_of(choices)));
      (run_check(entry->second, given, at_, name, extras), ...);
      member = entry->second;
    } else if constexpr (is_custom<T>::value) {
      member.apply(given, at_.child(name));
      (run_check(member, given, at_, name, extras), ...);
    } else if constexpr (has_fields<T>::value) {
      apply_into(member, given, at_.child(name), {});
      (run_check(member, given, at_, name, extras), ...);
    } else {
      T value{};
      read_plain(given, at_, name, value);
      (run_check(value, given, at_, name, extras), ...);
      member = std::move(value);
    }
  }

 private:
  template <class T>
  static const std::pair<std::string, T>* find(const Choices<T>& choices, const std::string& name) {
    for (const auto& entry : choices.names) {
      if (entry.first == name) return &entry;
    }
    return nullptr;
  }

  const nlohmann::json& patch_;
  const Location& at_;
  const std::set<std::string>& handled_;
};

template <class S>
nlohmann::json write(const S& section);

// Writes every field; only reads the members it is handed.
class Writer {
 public:
  template <class T, class... Extras>
  void operator()(const std::string& name, T& member, const std::string&, const Extras&... extras) {
    check_field<T, Extras...>();
    if constexpr (has_choices_v<T, Extras...>) {
      const auto& choices = choices_in<T>(extras...);
      for (const auto& entry : choices.names) {
        if (entry.second == member) {
          out[name] = entry.first;
          return;
        }
      }
      unnamed_choice(name);
    } else if constexpr (is_custom<T>::value) {
      out[name] = std::as_const(member).to_json();
    } else if constexpr (has_fields<T>::value) {
      out[name] = write(member);
    } else {
      out[name] = member;
    }
  }

  nlohmann::json out = nlohmann::json::object();
};

class Describer {
 public:
  Describer(std::string prefix, std::vector<FieldHelp>& out)
      : prefix_(std::move(prefix)), out_(out) {}

  template <class T, class... Extras>
  void operator()(const std::string& name, T& member, const std::string& help,
                  const Extras&... extras) {
    check_field<T, Extras...>();
    const auto path = prefix_.empty() ? name : prefix_ + "." + name;
    if constexpr (is_custom<T>::value && !has_choices_v<T, Extras...>) {
      std::as_const(member).describe(out_, path);
    } else if constexpr (has_fields<T>::value && !has_choices_v<T, Extras...>) {
      describe_into(member, path, out_);
    } else {
      Writer writer;
      writer(name, member, help, extras...);
      FieldHelp row{path, "", writer.out[name].dump(), help, ""};
      if constexpr (has_choices_v<T, Extras...>) {
        row.type = join_or(names_of(choices_in<T>(extras...)));
      } else {
        row.type = type_name(member);
      }
      (add_expected(row, extras), ...);
      out_.push_back(std::move(row));
    }
  }

 private:
  template <class T>
  static void add_expected(FieldHelp& row, const Check<T>& check) {
    row.expected += (row.expected.empty() ? "" : "; ") + check.expected;
  }
  template <class T>
  static void add_expected(FieldHelp&, const Choices<T>&) {}

  std::string prefix_;
  std::vector<FieldHelp>& out_;
};

// The visitors only read a section they are handed as const: fields() is one non-const
// member template for all of them.
template <class S>
S& visited(const S& section) {
  return const_cast<S&>(section);
}

template <class S>
nlohmann::json write(const S& section) {
  static_assert(has_fields<S>::value, "a config section declares template <class F> fields(F&)");
  Writer writer;
  visited(section).fields(writer);
  return std::move(writer.out);
}

template <class S>
std::vector<std::string> declared_keys() {
  static_assert(has_fields<S>::value, "a config section declares template <class F> fields(F&)");
  S section;
  KeyLister lister;
  section.fields(lister);
  return std::move(lister.names);
}

template <class S>
void apply_into(S& section, const nlohmann::json& patch, const Location& at,
                const std::set<std::string>& handled) {
  static_assert(has_fields<S>::value, "a config section declares template <class F> fields(F&)");
  if (!patch.is_object()) fail(at, "", patch, "an object");
  auto known = declared_keys<S>();
  known.insert(known.end(), handled.begin(), handled.end());
  if constexpr (has_preset<S>::value) known.push_back("preset");
  reject_unknown_keys(patch, at, known);
  if constexpr (has_preset<S>::value) {
    const auto preset = patch.find("preset");
    if (preset != patch.end()) {
      if (!preset->is_string()) fail(at, "preset", *preset, "a preset name");
      section.apply_preset(preset->template get<std::string>(), at);
    }
  }
  Reader reader(patch, at, handled);
  section.fields(reader);
  if constexpr (has_validate<S>::value) section.validate(at);
}

template <class S>
void describe_into(const S& section, const std::string& prefix, std::vector<FieldHelp>& out) {
  static_assert(has_fields<S>::value, "a config section declares template <class F> fields(F&)");
  Describer describer(prefix, out);
  visited(section).fields(describer);
}

}  // namespace detail

// Every declared field, in declaration order. nlohmann::json keeps its keys sorted, so the
// written object lists them alphabetically (keys_of() and describe() keep the order).
template <class S>
nlohmann::json to_json(const S& section) {
  return detail::write(section);
}

// Applies `patch` (an object) onto `section`: only the keys present change; a "preset" key
// (when S has apply_preset) first, then the others; then validate(at) when S has it. Strict:
// unknown keys, wrong JSON types and failing checks throw InputError naming `at.source` and
// the key's dotted path, and leave `section` unchanged. Keys in `handled` are skipped (a
// custom section that reads them itself).
template <class S>
void apply(S& section, const nlohmann::json& patch, const Location& at,
           const std::set<std::string>& handled) {
  S updated = section;
  detail::apply_into(updated, patch, at, handled);
  section = std::move(updated);
}
template <class S>
void apply(S& section, const nlohmann::json& patch, const Location& at) {
  apply(section, patch, at, {});
}

// The names S declares, in declaration order (S must be default-constructible).
template <class S>
std::vector<std::string> keys_of() {
  return detail::declared_keys<S>();
}
// Whether S declares a field `key` (so a custom section can tell "not a key of this kind").
template <class S>
bool has_field(const std::string& key) {
  const auto keys = keys_of<S>();
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

// One row per key, nested sections flattened into dotted paths under `prefix`; the
// defaults are the section's current values.
template <class S>
std::vector<FieldHelp> describe(const S& section, const std::string& prefix) {
  std::vector<FieldHelp> out;
  detail::describe_into(section, prefix, out);
  return out;
}

}  // namespace exfusion::config
