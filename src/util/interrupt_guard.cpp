// The signal handlers of InterruptGuard: only async-signal-safe work (an atomic store, or
// _exit on the second signal).
#include "exfusion/util/interrupt_guard.h"

#include <unistd.h>

#include <atomic>

namespace exfusion {
namespace {

std::atomic<int> pending_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler stores into it");

extern "C" void on_interrupt(int signal) {
  int expected = 0;
  if (!pending_signal.compare_exchange_strong(expected, signal)) _exit(128 + signal);
}

}  // namespace

InterruptGuard::InterruptGuard() {
  pending_signal.store(0);
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, &previous_int_);
  sigaction(SIGTERM, &action, &previous_term_);
}

InterruptGuard::~InterruptGuard() {
  sigaction(SIGINT, &previous_int_, nullptr);
  sigaction(SIGTERM, &previous_term_, nullptr);
}

int InterruptGuard::pending() { return pending_signal.load(); }

}  // namespace exfusion
