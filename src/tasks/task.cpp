// The task registry, with the built-in task on one line (see task.h).
#include "exfusion/tasks/task.h"

#include "exfusion/tasks/image_classification.h"
#include "exfusion/util/error.h"

namespace exfusion {

void TaskRegistry::add(const std::string& name, TaskFactory factory) {
  factories_[name] = std::move(factory);
}

std::unique_ptr<Task> TaskRegistry::make(const std::string& name,
                                         const TaskOptions& options) const {
  const auto found = factories_.find(name);
  if (found == factories_.end()) throw InputError("task \"" + name + "\" is not registered");
  return found->second(options);
}

std::vector<std::string> TaskRegistry::names() const {
  std::vector<std::string> names;
  for (const auto& [name, factory] : factories_) names.push_back(name);
  return names;
}

TaskRegistry& task_kinds() {
  static TaskRegistry registry = [] {
    TaskRegistry tasks;
    tasks.add("image_classification", [](const TaskOptions& options) {
      return std::make_unique<ImageClassificationTask>(options);
    });
    return tasks;
  }();
  return registry;
}

}  // namespace exfusion
