// The CPU test binary's main: GoogleTest's, or, with EXFUSION_TESTS_AS_CLI=1 in the
// environment, the `exfusion` command line with the test-only kinds registered
// (support/sequence_kinds.h). Tests that need a separate process of the CLI with those kinds
// (killed mid-run to test resume, a sweep's runs) start this binary that way.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "exfusion/cli/cli.h"
#include "support/sequence_kinds.h"

int main(int argc, char** argv) {
  const char* as_cli = std::getenv("EXFUSION_TESTS_AS_CLI");
  if (as_cli != nullptr && std::strcmp(as_cli, "1") == 0) {
    exfusion::testing::register_sequence_kinds();
    return exfusion::run_cli(argc, argv);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
