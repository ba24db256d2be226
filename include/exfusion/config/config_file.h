// Config files as JSON values: .json files through nlohmann, .yaml/.yml through yaml-cpp
// converted to the same JSON, so everything after reading (apply(), --set) sees one form;
// and YAML text for a JSON config, so the project can ship and save YAML configs.
#pragma once
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace exfusion::config {

// Reads a config file by its extension. .json: nlohmann (InputError "<file>: not valid JSON:
// <parser message with line and column>"). .yaml/.yml: mappings become objects (keys must be
// scalars, no duplicates), sequences arrays; plain scalars are typed by YAML 1.2's core schema
// (true/false, null/~, integers incl. 0x/0o, floats incl. 1e-5; .inf and .nan are rejected),
// quoted and block scalars stay strings; errors read "<file>:<line>: ...". An unreadable file:
// "<file>: cannot open the file"; any other extension: an error naming the accepted ones.
nlohmann::json read_config_file(const std::filesystem::path& path);

enum class ConfigFormat { json, yaml };
// The same for text already in memory; `file` names it in errors. Torch-free, like the rest
// of this reader, so the fuzz targets (fuzz/) run it alone.
nlohmann::json parse_config_text(std::string_view text, ConfigFormat format,
                                 const std::string& file);

// YAML text for a JSON config: block style, keys in the JSON's order, strings quoted
// wherever a plain scalar would read back as something else. read_config_file() on the text
// (as a .yaml file) gives back an equal JSON value.
std::string to_yaml(const nlohmann::json& config);

}  // namespace exfusion::config
