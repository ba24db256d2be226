// EXFUSION_KILL_AT (see fault_injection.h): read once; each point counts its own arrivals.
#include "exfusion/util/fault_injection.h"

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace exfusion {
namespace {

struct KillSpec {
  std::string point;  // empty: no point armed
  long count = 1;
  int signal = SIGKILL;
};

int signal_named(const std::string& name) {
  if (name == "TERM") return SIGTERM;
  if (name == "INT") return SIGINT;
  if (name == "STOP") return SIGSTOP;  // a hung process, for the data-parallel timeout tests
  return SIGKILL;
}

const KillSpec& kill_spec() {
  static const KillSpec spec = [] {
    KillSpec parsed;
    const char* text = std::getenv("EXFUSION_KILL_AT");
    if (text == nullptr || *text == '\0') return parsed;
    std::vector<std::string> parts;
    std::stringstream value(text);
    for (std::string part; std::getline(value, part, ':');) parts.push_back(part);
    parsed.point = parts.at(0);
    if (parts.size() > 1) parsed.count = std::strtol(parts[1].c_str(), nullptr, 10);
    if (parts.size() > 2) parsed.signal = signal_named(parts[2]);
    return parsed;
  }();
  return spec;
}

}  // namespace

void fault_point(const char* name) {
  const auto& spec = kill_spec();
  if (spec.point.empty() || spec.point != name) return;
  static std::mutex mutex;
  static long arrivals = 0;
  const std::lock_guard<std::mutex> lock(mutex);
  if (++arrivals == spec.count) std::raise(spec.signal);
}

}  // namespace exfusion
