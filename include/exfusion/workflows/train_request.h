// What `exfusion train` was asked, and the rules its options follow, in the library rather than
// the CLI: --init takes its config from the directory `exfusion upcycle` wrote (keys laid over
// it with --set, not --config), and --resume continues a run with the config saved in it and
// takes no other option. The CLI parses into a TrainRequest and calls run_training on its run.
#pragma once
#include <string>
#include <vector>

#include "exfusion/workflows/train.h"

namespace exfusion {

struct TrainRequest {
  std::string config_file;               // --config
  std::vector<std::string> assignments;  // the config shortcuts' --set, then --set's, in order
  std::string data_dir;                  // --data: data.dir, before every assignment
  std::string init_dir;                  // --init: a directory written by exfusion upcycle
  std::string resume_dir;                // --resume
  std::string out;                       // --out
  bool force = false;                    // --force
};

// The run the request asks for: its config (defaults, then the file or the --init directory's
// config.yaml, then data.dir and the assignments) and outputs, or the run to resume. InputError
// naming the options that cannot go together, or a missing --init config.
TrainRun resolve_train_request(const TrainRequest& request);

}  // namespace exfusion
