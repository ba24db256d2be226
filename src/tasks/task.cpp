// The task registry, with the built-in task on one line (see task.h).
#include "exfusion/tasks/task.h"

#include "exfusion/tasks/causal_lm.h"
#include "exfusion/tasks/image_classification.h"
#include "exfusion/tasks/span_corruption.h"
#include "exfusion/util/error.h"

namespace exfusion {

std::unique_ptr<Task> TaskRegistry::make(const std::string& name,
                                         const TaskOptions& options) const {
  const auto found = factories_.find(name);
  if (found == factories_.end()) {
    throw InputError("task \"" + name +
                     "\" is not registered; registered: " + config::join_or(names()));
  }
  return found->second(options);
}

std::shared_ptr<const TaskDataOptions> TaskRegistry::data_defaults(const std::string& name) const {
  if (!contains(name)) {
    throw InputError("task \"" + name +
                     "\" is not registered; registered: " + config::join_or(names()));
  }
  return kinds_.at(name, {}).defaults;
}

TaskRegistry& task_kinds() {
  static TaskRegistry registry = [] {
    TaskRegistry tasks;
    tasks.add(
        "image_classification",
        "images (IDX, CIFAR, an image-folder tree) to classes: cross-entropy, accuracy",
        [](const TaskOptions& options) {
          return std::make_unique<ImageClassificationTask>(options);
        },
        ImageDataConfig{});
    tasks.add(
        "span_corruption",
        "T5's pre-training on a text corpus (nanoT5's recipe): corrupted spans to targets, "
        "loss per token, perplexity",
        [](const TaskOptions& options) { return std::make_unique<SpanCorruptionTask>(options); },
        SpanCorruptionDataOptions{});
    tasks.add(
        "causal_lm",
        "a decoder language model on a text corpus: packed sequences, the next token at every "
        "position, loss per token, perplexity",
        [](const TaskOptions& options) { return std::make_unique<CausalLmTask>(options); },
        CausalLmDataOptions{});
    return tasks;
  }();
  return registry;
}

}  // namespace exfusion
