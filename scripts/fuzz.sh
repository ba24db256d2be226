#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ (clang, ASan + UBSan, torch-free readers only) and
# runs each for SECONDS (default 60) from a copy of its seed corpus in fuzz/corpus/<target>,
# one per core at a time (EXFUSION_FUZZ_JOBS sets how many).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]; targets: safetensors_header shard_index idx
# config_json config_yaml text_reader. A crash, leak or sanitizer report fails the script and
# leaves the input that caused it in build-fuzz/findings/<target>/ (copy it into the corpus once
# it is fixed).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors_header shard_index idx config_json config_yaml text_reader)

# clang 14 and its libFuzzer runtime, from Debian's packages, beside what setup.sh installs.
scripts/install_debian_packages.sh fuzz clang-14 libclang-rt-14-dev ninja-build cmake \
  nlohmann-json3-dev libyaml-cpp-dev zlib1g-dev
compiler=$(command -v clang++-14)
cmake -S fuzz -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER="$compiler" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build-fuzz >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# One target: runs it from a copy of its seed corpus; on failure prints its log's tail.
fuzz_one() {
  local target=$1 work=build-fuzz/work/$1 findings=build-fuzz/findings/$1
  rm -rf "$work" && mkdir -p "$work" "$findings"
  cp fuzz/corpus/"$target"/* "$work"/
  # -rss_limit_mb: the readers' own bounds keep every input far below it.
  if ! build-fuzz/fuzz_"$target" "$work" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -timeout=30 -max_len=65536 -artifact_prefix="$findings/" -print_final_stats=1 \
    >"build-fuzz/$target.log" 2>&1; then
    echo "fuzz: $target FAILED; inputs in $findings, log build-fuzz/$target.log" >&2
    tail -40 "build-fuzz/$target.log" >&2
    return 1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "build-fuzz/$target.log" |
    sed "s/^/fuzz: $target: /"
}

# The targets run side by side, one per core: each still gets its SECONDS of one core, and CI
# waits about a third as long on 2 cores as it would for them one after another.
parallel=${EXFUSION_FUZZ_JOBS:-$(nproc)}
status=0
running=0
for target in "${targets[@]}"; do
  if ((running >= parallel)); then
    wait -n || status=1
    running=$((running - 1))
  fi
  echo "fuzz: $target for ${seconds}s"
  fuzz_one "$target" &
  running=$((running + 1))
done
while ((running > 0)); do
  wait -n || status=1
  running=$((running - 1))
done
exit $status
