// Whole-file reads for the data readers (see file_bytes.h).
#include "exfusion/util/file_bytes.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "exfusion/util/error.h"

namespace exfusion {

std::string read_file_bytes(const std::filesystem::path& path, const std::string& expected) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw InputError(path.string() + ": no such file");
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw InputError(path.string() + ": not a regular file, expected " + expected);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw InputError(path.string() + ": cannot open the file (" + std::strerror(errno) + ")");
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) throw InputError(path.string() + ": cannot read the file");
  return std::move(bytes).str();
}

}  // namespace exfusion
