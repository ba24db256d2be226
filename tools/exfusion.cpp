// exfusion: train Transformers with multi-expert fusion, fuse them into dense models, evaluate
// and inspect checkpoints. Everything is in the library (cli/cli.h).
#include "exfusion/cli/cli.h"

int main(int argc, char** argv) { return exfusion::run_cli(argc, argv); }
