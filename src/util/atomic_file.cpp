// Temp-file-and-rename writes: see include/exfusion/util/atomic_file.h.
#include "exfusion/util/atomic_file.h"

#include <unistd.h>

#include <fstream>

#include "exfusion/util/error.h"

namespace exfusion {

void replace_file_atomically(const std::filesystem::path& path,
                             const std::function<void(const std::filesystem::path&)>& write_to) {
  const auto tmp = std::filesystem::path(path.string() + ".tmp." + std::to_string(::getpid()));
  try {
    write_to(tmp);
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(std::ostream&)>& write) {
  replace_file_atomically(path, [&](const std::filesystem::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw InputError(path.string() + ": cannot open for writing");
    write(out);
    out.flush();
    if (!out) throw InputError(path.string() + ": write failed (disk full?)");
  });
}

void write_text_atomically(const std::filesystem::path& path, const std::string& text) {
  write_file_atomically(path, [&](std::ostream& out) { out << text; });
}

void refuse_overwrite(const std::filesystem::path& path, bool force) {
  if (!force && std::filesystem::exists(path)) {
    throw InputError(path.string() + ": already exists; pass --force to overwrite it");
  }
}

}  // namespace exfusion
