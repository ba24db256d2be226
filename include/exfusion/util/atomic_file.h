// Outputs are written to a temporary file beside the target and renamed into place, so a
// crash or a bad input never leaves a half-written checkpoint or log behind. The temporary is
// created exclusively (mkstemp: a planted file or symlink is never followed), and the file and
// its directory are flushed to disk before and after the rename, so a power cut keeps either
// the old file or the new one whole.
#pragma once
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>

namespace exfusion {

// Writes through `write` into a fresh `<path>.tmp.XXXXXX`, flushes it to disk and renames it
// onto `path`, then flushes the directory. On any exception the temporary file is removed and
// the exception rethrown. Temporaries of `path` that killed writes left (their writer's lock is
// gone) are removed first; a live writer's are kept.
void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(std::ostream&)>& write);

void write_text_atomically(const std::filesystem::path& path, const std::string& text);

// The same for writers that take a file name (LibTorch's profiler, say): `write_to` writes
// the temporary file it is given (created empty and exclusively), which then replaces `path`.
void replace_file_atomically(const std::filesystem::path& path,
                             const std::function<void(const std::filesystem::path&)>& write_to);

// Whether `name` is a temporary file that write_file_atomically makes (`*.tmp.XXXXXX`).
bool is_atomic_write_temporary(const std::string& name);
// Removes the temporaries that writes killed midway left in `dir` (not recursive), whatever
// their target; returns how many. A temporary that a live process is writing is kept.
int remove_atomic_write_leftovers(const std::filesystem::path& dir);

// Flushes a directory's entries (a rename or removal in it) to disk.
void sync_directory(const std::filesystem::path& dir);

// Throws InputError naming `path` when it exists and `force` is false.
void refuse_overwrite(const std::filesystem::path& path, bool force);

}  // namespace exfusion
