// The rules of `exfusion train`'s options (see train_request.h).
#include "exfusion/workflows/train_request.h"

#include <filesystem>

#include "exfusion/train/initialization.h"
#include "exfusion/util/error.h"

namespace exfusion {

TrainRun resolve_train_request(const TrainRequest& request) {
  ConfigLayers layers{request.config_file, {}};
  if (!request.data_dir.empty()) layers.assignments.push_back("data.dir=" + request.data_dir);
  layers.assignments.insert(layers.assignments.end(), request.assignments.begin(),
                            request.assignments.end());
  if (!request.init_dir.empty()) {
    if (!request.config_file.empty()) {
      throw InputError("--init " + request.init_dir +
                       " takes its config from the directory's config.yaml; lay keys over it "
                       "with --set rather than --config");
    }
    const auto init_config = std::filesystem::path(request.init_dir) / kInitConfigFile;
    if (!std::filesystem::exists(init_config)) {
      throw InputError(init_config.string() +
                       ": no such file (expected a directory written by exfusion upcycle)");
    }
    layers.file = init_config.string();
  }
  if (!request.resume_dir.empty()) {
    if (!request.config_file.empty() || !layers.assignments.empty() || !request.out.empty() ||
        request.force || !request.init_dir.empty()) {
      throw InputError("--resume " + request.resume_dir +
                       " continues the run with the config saved in it; --config, --set, "
                       "--out, --force and the config shortcuts cannot be given with it");
    }
    return TrainRun{default_run_config(), {}, false, request.resume_dir};
  }
  return TrainRun{build_run_config(default_run_config(), layers), request.out, request.force, {}};
}

}  // namespace exfusion
