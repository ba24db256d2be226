// A file that only grows, written through a raw descriptor in append mode: each append is one
// write() call (retried until whole), so a reader never sees a half-buffered record; a resumed
// run cuts it back to the size a checkpoint recorded. The metrics log and the TensorBoard event
// file are both one.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace exfusion {

class AppendOnlyFile {
 public:
  // Creates the file or opens it for appending; `what` names it in errors ("the metrics log").
  // Throws InputError when it cannot be opened.
  AppendOnlyFile(const std::filesystem::path& path, std::string what);
  ~AppendOnlyFile();
  AppendOnlyFile(const AppendOnlyFile&) = delete;
  AppendOnlyFile& operator=(const AppendOnlyFile&) = delete;

  // Throws InputError when the write fails (a full disk).
  void append(std::string_view bytes);
  // The last byte of the file, or '\n' for an empty one.
  char last_byte() const;
  // The size in bytes, and cutting the file back to `bytes` (flushed to disk). Throws
  // InputError when the file is shorter than `bytes`: it was changed since they were taken.
  int64_t size() const;
  void truncate(int64_t bytes);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::string what_;
  int fd_ = -1;
};

}  // namespace exfusion
