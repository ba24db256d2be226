// Append-only files (see append_only_file.h) over POSIX descriptors: O_APPEND, write() retried
// on EINTR and short writes, fstat for the size, ftruncate + fsync to cut back.
#include "exfusion/util/append_only_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "exfusion/util/error.h"

namespace exfusion {

AppendOnlyFile::AppendOnlyFile(const std::filesystem::path& path, std::string what)
    : path_(path), what_(std::move(what)) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw InputError(path.string() + ": cannot open " + what_ + ": " + std::strerror(errno));
  }
}

AppendOnlyFile::~AppendOnlyFile() { ::close(fd_); }

void AppendOnlyFile::append(std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw InputError(path_.string() + ": cannot write " + what_ + ": " + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
}

char AppendOnlyFile::last_byte() const {
  const int64_t bytes = size();
  char last = '\n';
  if (bytes > 0 && ::pread(fd_, &last, 1, bytes - 1) != 1) last = '\n';
  return last;
}

int64_t AppendOnlyFile::size() const {
  struct stat info {};
  if (::fstat(fd_, &info) != 0) {
    throw InputError(path_.string() + ": cannot read its size: " + std::strerror(errno));
  }
  return static_cast<int64_t>(info.st_size);
}

void AppendOnlyFile::truncate(int64_t bytes) {
  if (bytes > size()) {
    throw InputError(path_.string() + ": shorter (" + std::to_string(size()) +
                     " bytes) than when the checkpoint was written (" + std::to_string(bytes) +
                     " bytes): it was changed since");
  }
  if (::ftruncate(fd_, bytes) != 0 || ::fsync(fd_) != 0) {
    throw InputError(path_.string() + ": cannot cut it back: " + std::strerror(errno));
  }
}

}  // namespace exfusion
