// Outputs are written to a temporary file beside the target and renamed into place, so a
// crash or a bad input never leaves a half-written checkpoint or log behind.
#pragma once
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>

namespace exfusion {

// Writes through `write` into `<path>.tmp.<pid>` and renames it onto `path`. On any
// exception the temporary file is removed and the exception rethrown.
void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(std::ostream&)>& write);

void write_text_atomically(const std::filesystem::path& path, const std::string& text);

// Throws InputError naming `path` when it exists and `force` is false.
void refuse_overwrite(const std::filesystem::path& path, bool force);

}  // namespace exfusion
