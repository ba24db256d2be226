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

// The same for writers that take a file name (LibTorch's profiler, say): `write_to` writes
// the temporary file it is given, which then replaces `path`.
void replace_file_atomically(const std::filesystem::path& path,
                             const std::function<void(const std::filesystem::path&)>& write_to);

// Throws InputError naming `path` when it exists and `force` is false.
void refuse_overwrite(const std::filesystem::path& path, bool force);

}  // namespace exfusion
