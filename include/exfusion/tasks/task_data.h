// The run's `data` section belongs to its task: each task kind declares its data options with
// the config field machinery (defaults, checks, help, `exfusion config`), and the section holds
// the options of the run's task behind one face, as the `model` section does for model kinds.
// A key that only another task's data declares is an error naming that task.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/models/model.h"

namespace exfusion {

namespace detail {
template <class O, class = void>
struct has_validate_with : std::false_type {};
template <class O>
struct has_validate_with<
    O, std::void_t<decltype(std::declval<const O&>().validate_with(
           std::declval<const ModelOptions&>(), std::declval<const config::Location&>()))>>
    : std::true_type {};
template <class O, class = void>
struct has_evaluation_entries : std::false_type {};
template <class O>
struct has_evaluation_entries<O,
                              std::void_t<decltype(std::declval<const O&>().evaluation_entries())>>
    : std::true_type {};
template <class O, class = void>
struct has_missing_for_evaluation : std::false_type {};
template <class O>
struct has_missing_for_evaluation<
    O, std::void_t<decltype(std::declval<const O&>().missing_for_evaluation())>> : std::true_type {
};
}  // namespace detail

// A task kind's data options, type-erased. DeclaredDataOptions<Options> implements it for an
// options struct with declared fields (config/fields.h), which may also have
//   void validate_with(const ModelOptions&, const config::Location&) const;  // against the model
//   nlohmann::json evaluation_entries() const;  // what evaluating an export needs (model.json)
//   std::string missing_for_evaluation() const;  // "" or what evaluation lacks, and the fix
class TaskDataOptions {
 public:
  virtual ~TaskDataOptions() = default;
  virtual std::shared_ptr<TaskDataOptions> clone() const = 0;
  virtual void apply(const nlohmann::json& patch, const config::Location& at) = 0;
  virtual nlohmann::json to_json() const = 0;
  virtual std::vector<config::FieldHelp> describe(const std::string& prefix) const = 0;
  virtual std::vector<std::string> keys() const = 0;
  virtual void validate_with(const ModelOptions& model, const config::Location& at) const = 0;
  virtual nlohmann::json evaluation_entries() const = 0;
  virtual std::string missing_for_evaluation() const = 0;
};

template <class Options>
class DeclaredDataOptions final : public TaskDataOptions {
 public:
  explicit DeclaredDataOptions(Options options = {}) : options(std::move(options)) {}
  std::shared_ptr<TaskDataOptions> clone() const override {
    return std::make_shared<DeclaredDataOptions>(options);
  }
  void apply(const nlohmann::json& patch, const config::Location& at) override {
    config::apply(options, patch, at);
  }
  nlohmann::json to_json() const override { return config::to_json(options); }
  std::vector<config::FieldHelp> describe(const std::string& prefix) const override {
    return config::describe(options, prefix);
  }
  std::vector<std::string> keys() const override {
    auto keys = config::keys_of<Options>();
    if constexpr (config::detail::has_preset<Options>::value) keys.push_back("preset");
    return keys;
  }
  void validate_with(const ModelOptions& model, const config::Location& at) const override {
    if constexpr (detail::has_validate_with<Options>::value) options.validate_with(model, at);
  }
  nlohmann::json evaluation_entries() const override {
    if constexpr (detail::has_evaluation_entries<Options>::value) {
      return options.evaluation_entries();
    } else {
      return nlohmann::json::object();
    }
  }
  std::string missing_for_evaluation() const override {
    if constexpr (detail::has_missing_for_evaluation<Options>::value) {
      return options.missing_for_evaluation();
    } else {
      return "";
    }
  }

  Options options;
};

// The `data` section: the data options of the run's task (RunConfig::task), image
// classification's by default.
inline constexpr const char* kDefaultTask = "image_classification";

struct DataSection {
  DataSection();  // kDefaultTask's defaults
  DataSection(std::string task, std::shared_ptr<const TaskDataOptions> options);
  // The registered defaults of `task`'s data; throws InputError for an unregistered task.
  static DataSection of_task(const std::string& task);

  template <class Options>
  const Options* as() const {
    const auto* declared = dynamic_cast<const DeclaredDataOptions<Options>*>(options.get());
    return declared ? &declared->options : nullptr;
  }
  // The options to change in place (copied first when another config shares them);
  // std::logic_error when the section holds another task's options.
  template <class Options>
  Options& edit() {
    if (as<Options>() == nullptr) {
      throw std::logic_error("DataSection::edit: the data section holds " + task + "'s options");
    }
    if (options.use_count() != 1) options = options->clone();
    // Every options object is made non-const (clone, make_shared): only this section holds it.
    return const_cast<Options&>(*as<Options>());
  }

  // Strict as every section; a key of another task's data names that task.
  void apply(const nlohmann::json& patch, const config::Location& at);
  nlohmann::json to_json() const;
  void describe(std::vector<config::FieldHelp>& out, const std::string& prefix) const;

  std::string task;
  std::shared_ptr<const TaskDataOptions> options;
};

}  // namespace exfusion
