// The data section of the run's task (see task_data.h).
#include "exfusion/tasks/task_data.h"

#include <algorithm>

#include "exfusion/tasks/task.h"
#include "exfusion/util/error.h"

namespace exfusion {

DataSection::DataSection() : DataSection(of_task(kDefaultTask)) {}

DataSection DataSection::of_task(const std::string& task) {
  DataSection section(task, task_kinds().data_defaults(task));
  return section;
}

DataSection::DataSection(std::string task, std::shared_ptr<const TaskDataOptions> options)
    : task(std::move(task)), options(std::move(options)) {}

void DataSection::apply(const nlohmann::json& patch, const config::Location& at) {
  if (!patch.is_object()) config::fail(at, "", patch, "an object");
  const auto own = options->keys();
  for (const auto& item : patch.items()) {
    if (std::find(own.begin(), own.end(), item.key()) != own.end()) continue;
    for (const auto& other : task_kinds().names()) {
      if (other == task) continue;
      const auto theirs = task_kinds().data_defaults(other)->keys();
      if (std::find(theirs.begin(), theirs.end(), item.key()) != theirs.end()) {
        config::fail(at, "'" + at.key_path(item.key()) + "' is a key of the " + other +
                             " task's data, and this run's task is " + task +
                             " (set task: " + other + " to use it)");
      }
    }
  }
  auto updated = options->clone();
  updated->apply(patch, at);
  options = std::move(updated);
}

nlohmann::json DataSection::to_json() const { return options->to_json(); }

void DataSection::describe(std::vector<config::FieldHelp>& out, const std::string& prefix) const {
  for (auto& field : options->describe(prefix)) out.push_back(std::move(field));
}

}  // namespace exfusion
