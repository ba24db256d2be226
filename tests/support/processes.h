// Starting the built `exfusion` binary as a child process the test can signal, wait for and
// read the output of: what the kill-and-resume tests need beyond run_cli's blocking popen.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"

namespace exfusion::testing {

struct Child {
  pid_t pid = -1;
  std::filesystem::path output;  // stdout and stderr
};

// Starts `exfusion <args>` (split on spaces) with `env` ("NAME=value", or empty) added to the
// environment; its output goes to `output`.
inline Child spawn_cli(const std::string& args, const std::filesystem::path& output,
                       const std::string& env = "") {
  std::vector<std::string> words{EXFUSION_CLI_PATH};
  std::istringstream split(args);
  for (std::string word; split >> word;) words.push_back(word);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!env.empty()) ::putenv(const_cast<char*>(env.c_str()));
    const int fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    std::vector<char*> argv;
    for (auto& word : words) argv.push_back(word.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return {pid, output};
}

// The child's exit code, or 128 + the signal that ended it.
inline int wait_for(const Child& child) {
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Waits until `predicate` holds or `timeout` passes; returns whether it held.
template <class Predicate>
bool wait_until(Predicate predicate, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (predicate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return predicate();
}

// The names in `dir` that start with `prefix`, sorted; none when `dir` does not exist.
inline std::vector<std::string> list_files(const std::filesystem::path& dir,
                                           const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const auto name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace exfusion::testing
