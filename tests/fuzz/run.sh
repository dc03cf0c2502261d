#!/usr/bin/env bash
# Builds ckptd's libFuzzer targets (clang-14, ASan + UBSan) and runs each for
# SECONDS (default 60) from its committed seed corpus. Fails on any crash,
# leak, timeout, out-of-memory or sanitizer report; the input that caused it
# is saved as build-fuzz/fuzz-artifacts/<target>-crash-<sha1> (replay it with
# build-fuzz/tests/fuzz/fuzz_<target> FILE).
#
#   tests/fuzz/run.sh [SECONDS]
#
# Environment:
#   CKPTD_FUZZ_BUILD_DIR  a build folder configured with CKPTD_FUZZ=ON to use
#                         (default: build-fuzz, configured with the fuzz preset)
#   CKPTD_FUZZ_TARGETS    which targets to run (default: "http_request layouts config")
#   CKPTD_FUZZ_JOBS       fuzzing processes per target (default 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
build=${CKPTD_FUZZ_BUILD_DIR:-build-fuzz}
targets=${CKPTD_FUZZ_TARGETS:-http_request layouts config}
jobs=${CKPTD_FUZZ_JOBS:-1}

if [ ! -f "$build/CMakeCache.txt" ]; then
  if [ "$build" = build-fuzz ]; then
    cmake --preset fuzz >/dev/null
  else
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
      -DCKPTD_FUZZ=ON >/dev/null
  fi
fi
cmake --build "$build" --target fuzz_targets -j2

# Inputs larger than these add nothing but time: the request header limit is
# 16 KiB (so 32 KiB reaches the 431 and 413 paths), config files are small.
declare -A max_len=([http_request]=32768 [layouts]=16384 [config]=4096)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
root=$PWD
build=$(cd "$build" && pwd)
parallel=()
# -jobs makes libFuzzer run workers that log to fuzz-<n>.log in the current
# folder (the build folder here); it copies each to its own output as well.
[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
failed=()
for target in $targets; do
  work="$build/fuzz-corpus/$target"  # new inputs land here; the seeds stay as committed
  artifacts="$build/fuzz-artifacts"
  log="$build/fuzz-$target.log"
  mkdir -p "$work" "$artifacts"
  echo "fuzzing $target for ${seconds}s ($log)"
  status=0
  (cd "$build" && "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len="${max_len[$target]}" -dict="$root/tests/fuzz/$target.dict" \
    -print_final_stats=1 "${parallel[@]}" -artifact_prefix="$artifacts/$target-" \
    "$work" "$root/tests/fuzz/corpus/$target") >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ] ||
    grep -qE "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error:|invariant failed" "$log"; then
    echo "FAILED: fuzz_$target (exit $status); the end of $log:" >&2
    tail -n 60 "$log" >&2
    failed+=("$target")
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|cov: " "$log" | tail -n 3 | sed "s/^/  /"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: ${targets// /, } ran ${seconds}s each without a finding"
