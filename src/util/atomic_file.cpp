// Temp-file-and-rename writes: see include/exfusion/util/atomic_file.h. The stream writes
// straight into the descriptor mkstemp returned, so the file that is flushed and renamed is
// the one that was created exclusively. Each temporary is flock()ed by its writer until it is
// renamed: the lock goes with the process, so one that can be taken marks a killed write.
#include "exfusion/util/atomic_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <streambuf>

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

constexpr const char* kTemporaryInfix = ".tmp.";
constexpr size_t kTemporarySuffixLength = 6;  // mkstemp's XXXXXX

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const char* data, size_t size, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw InputError(path.string() + ": write failed: " + errno_text());
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// An output stream buffer over a file descriptor, buffered in 1 MiB blocks.
class DescriptorBuffer : public std::streambuf {
 public:
  DescriptorBuffer(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }
  void flush_all() {
    write_all(fd_, pbase(), static_cast<size_t>(pptr() - pbase()), path_);
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }

 protected:
  int_type overflow(int_type ch) override {
    flush_all();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }
  int sync() override {
    flush_all();
    return 0;
  }
  std::streamsize xsputn(const char* data, std::streamsize count) override {
    if (count >= static_cast<std::streamsize>(buffer_.size())) {
      flush_all();
      write_all(fd_, data, static_cast<size_t>(count), path_);
      return count;
    }
    return std::streambuf::xsputn(data, count);
  }

 private:
  int fd_;
  std::filesystem::path path_;
  std::array<char, 1 << 20> buffer_{};
};

// An exclusively created, empty `<path>.tmp.XXXXXX`; closes on destruction.
struct Temporary {
  explicit Temporary(const std::filesystem::path& target) {
    std::string pattern = target.string() + kTemporaryInfix + "XXXXXX";
    fd = ::mkostemp(pattern.data(), O_CLOEXEC);
    if (fd < 0)
      throw InputError(target.string() + ": cannot create a file beside it: " + errno_text());
    path = pattern;
    // Nobody else knows the name yet, so this never waits.
    ::flock(fd, LOCK_EX);
  }
  ~Temporary() { close(); }
  Temporary(const Temporary&) = delete;
  Temporary& operator=(const Temporary&) = delete;
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  int fd = -1;
  std::filesystem::path path;
};

void sync_file(int fd, const std::filesystem::path& path) {
  if (::fsync(fd) != 0) throw InputError(path.string() + ": cannot flush to disk: " + errno_text());
}

// Flushes `tmp`'s data, renames it onto `path` and flushes the directory; removes `tmp` and
// rethrows when any of it fails. The descriptor (and its lock) stays open over the rename, so
// no cleaner takes the finished temporary for a killed write's.
void commit(Temporary& tmp, const std::filesystem::path& path) {
  sync_file(tmp.fd, path);
  std::filesystem::rename(tmp.path, path);
  tmp.close();
  sync_directory(path.has_parent_path() ? path.parent_path() : ".");
}

// Removes `file` when no live writer holds its lock; returns whether it did.
bool remove_if_abandoned(const std::filesystem::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  bool removed = false;
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
    std::error_code ignored;
    removed = std::filesystem::remove(file, ignored);
  }
  ::close(fd);
  return removed;
}

// The abandoned temporaries of `dir`, or of one target in it when `target_name` is given.
int remove_abandoned_temporaries(const std::filesystem::path& dir, const std::string& target_name) {
  int removed = 0;
  std::error_code error;
  const std::string prefix = target_name + kTemporaryInfix;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const auto name = entry.path().filename().string();
    if (!is_atomic_write_temporary(name)) continue;
    if (!target_name.empty() && (name.size() != prefix.size() + kTemporarySuffixLength ||
                                 name.compare(0, prefix.size(), prefix) != 0)) {
      continue;
    }
    std::error_code type_error;
    if (entry.is_regular_file(type_error) && !entry.is_symlink(type_error) &&
        remove_if_abandoned(entry.path())) {
      ++removed;
    }
  }
  return removed;
}

// A write of `path` first clears what earlier, killed writes of the same file left beside it.
void remove_leftovers_of(const std::filesystem::path& path) {
  remove_abandoned_temporaries(path.has_parent_path() ? path.parent_path() : ".",
                               path.filename().string());
}

void run_removing_on_failure(Temporary& tmp, const std::function<void()>& body) {
  try {
    body();
  } catch (...) {
    tmp.close();
    std::error_code ignored;
    std::filesystem::remove(tmp.path, ignored);
    throw;
  }
}

}  // namespace

void sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // nothing to flush where a directory cannot be opened (a removed one)
  ::fsync(fd);
  ::close(fd);
}

void replace_file_atomically(const std::filesystem::path& path,
                             const std::function<void(const std::filesystem::path&)>& write_to) {
  remove_leftovers_of(path);
  Temporary tmp(path);
  run_removing_on_failure(tmp, [&] {
    write_to(tmp.path);
    commit(tmp, path);
  });
}

void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(std::ostream&)>& write) {
  remove_leftovers_of(path);
  Temporary tmp(path);
  run_removing_on_failure(tmp, [&] {
    DescriptorBuffer buffer(tmp.fd, path);
    std::ostream out(&buffer);
    out.exceptions(std::ios::badbit);
    write(out);
    buffer.flush_all();
    commit(tmp, path);
  });
}

void write_text_atomically(const std::filesystem::path& path, const std::string& text) {
  write_file_atomically(path, [&](std::ostream& out) { out << text; });
}

bool is_atomic_write_temporary(const std::string& name) {
  const auto at = name.rfind(kTemporaryInfix);
  return at != std::string::npos && at > 0 &&
         name.size() == at + std::strlen(kTemporaryInfix) + kTemporarySuffixLength;
}

int remove_atomic_write_leftovers(const std::filesystem::path& dir) {
  return remove_abandoned_temporaries(dir, "");
}

void refuse_overwrite(const std::filesystem::path& path, bool force) {
  if (!force && std::filesystem::exists(path)) {
    throw InputError(path.string() + ": already exists; pass --force to overwrite it");
  }
}

}  // namespace exfusion
