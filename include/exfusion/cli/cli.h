// The `exfusion` command line as a library call: parses the arguments, calls the matching
// workflow of workflows/ (train.h, evaluate.h, ... or the bench), and turns errors into exit codes
// — 2 with one message for bad input, 1 for a bug. tools/exfusion.cpp is main() around it; tests
// call it in-process, e.g. after registering a kind of their own.
#pragma once

namespace exfusion {

int run_cli(int argc, const char* const* argv);

}  // namespace exfusion
