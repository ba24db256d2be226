// The message of the InputError an action throws, for tests of what bad input is told.
#pragma once
#include <functional>
#include <string>

#include "exfusion/util/error.h"

namespace exfusion::testing {

// The InputError's message, or "no error" when `action` returns normally.
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const InputError& error) {
    return error.what();
  }
  return "no error";
}

}  // namespace exfusion::testing
