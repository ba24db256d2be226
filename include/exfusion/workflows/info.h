// `exfusion info` as a library call: a checkpoint's kind and format, architecture, parameters
// trained, stored and deployed, FLOPs, each FFN site and the model's metrics (fusion weights);
// workflows/checkpoint_table.h prints it for a person.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

namespace exfusion {

nlohmann::json describe_checkpoint(const std::filesystem::path& path);

}  // namespace exfusion
