// A whole input file read into memory, with the errors every reader gives the same way: no
// such file, not a regular file (naming what was expected), cannot open or read it.
#pragma once
#include <filesystem>
#include <string>

namespace exfusion {

// Throws InputError "<path>: ..."; `expected` completes "not a regular file, expected <...>".
std::string read_file_bytes(const std::filesystem::path& path, const std::string& expected);

}  // namespace exfusion
