#!/usr/bin/env bash
# Runs the libFuzzer targets.
#
#   tests/fuzz/run.sh BINARY NAME SECONDS WORKDIR   one target (what ctest runs)
#   tests/fuzz/run.sh [SECONDS]                     every target, SECONDS each
#                                                   (default 600): builds build-san/
#                                                   with Clang, ASan and UBSan first
#
# Inputs that once crashed (regressions/NAME/) are replayed first; then the
# fuzzer runs from the seeds (corpus/NAME/) and what earlier runs found
# (WORKDIR). A crash leaves its input in WORKDIR/../artifacts/NAME/: copy it
# into regressions/NAME/ with the fix.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [ $# -le 1 ]; then
  seconds="${1:-600}"
  root="$(cd "$here/../.." && pwd)"
  build="${SAN_BUILD_DIR:-$root/build-san}"
  SANITIZE=1 BUILD_DIR="$build" "$root/deploy/local/build.sh"
  for name in edge_request config lane_frames request_target signed_snapshot; do
    "$0" "$build/bin/postern_fuzz_$name" "$name" "$seconds" "$build/tests/fuzz/corpus/$name"
  done
  exit 0
fi

bin="$1" name="$2" seconds="$3" work="$4"
artifacts="$(dirname "$work")/../artifacts/$name"
mkdir -p "$work" "$artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/../lsan.supp:print_suppressions=0}"
[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ] && export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-/usr/lib/llvm-14/bin/llvm-symbolizer}"
# What the code under test logs (the broker's JSON lines) goes to a file; its
# tail is shown when the run fails.
log="$(dirname "$work")/../$name.stdout.log"
show_log() { echo "--- last lines the code under test logged ($log):"; tail -n 20 "$log"; }
regressions=("$here/regressions/$name"/*)
if [ -e "${regressions[0]}" ]; then
  echo "fuzz $name: replaying ${#regressions[@]} regression input(s)"
  "$bin" "${regressions[@]}" > "$log" || { show_log; exit 1; }
fi
echo "fuzz $name: ${seconds}s from $(ls "$here/corpus/$name" | wc -l) seeds and $(ls "$work" | wc -l) found before"
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=3072 -max_len=16384 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$work" "$here/corpus/$name" > "$log" || { show_log; exit 1; }
