// `exfusion info`'s page for a person: what describe_checkpoint found (workflows/info.h) as a
// few labelled lines and a table of the FFN sites with their kind and what each reports (fusion
// weights, routing). `--json` prints the description itself, for scripts.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace exfusion {

std::string format_checkpoint_description(const nlohmann::json& info);

}  // namespace exfusion
