// Errors a user can fix (a missing file, a bad option, a wrong checkpoint). The CLI turns
// InputError into one message and exit code 2; anything else is a bug and exits 1.
#pragma once
#include <stdexcept>
#include <string>

namespace exfusion {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace exfusion
