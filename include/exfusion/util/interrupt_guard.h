// SIGINT and SIGTERM while a run trains: the first one is remembered, so the run finishes its
// step, writes a checkpoint and exits (128 + the signal); a second one exits at once (the last
// checkpoint written is still whole). A scoped guard, as c10::InferenceMode is: the handlers
// are installed while it lives and the previous ones restored when it ends.
#pragma once
#include <csignal>
#include <stdexcept>
#include <string>

namespace exfusion {

class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  // The first signal received while a guard lived (SIGINT or SIGTERM), or 0.
  static int pending();

 private:
  struct sigaction previous_int_ {};
  struct sigaction previous_term_ {};
};

// Thrown where a run stopped for a signal (its checkpoint written); the CLI exits with
// exit_code_for_signal(signal()).
class Interrupted : public std::runtime_error {
 public:
  explicit Interrupted(int signal)
      : std::runtime_error("stopped by signal " + std::to_string(signal)), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

// What a process should exit with after `signal` stopped it: 130 for SIGINT, 143 for SIGTERM.
inline int exit_code_for_signal(int signal) { return 128 + signal; }

}  // namespace exfusion
