#!/usr/bin/env bash
# Configures and builds Postern into build/ (or $BUILD_DIR).
# SANITIZE=1: Clang with AddressSanitizer + UndefinedBehaviorSanitizer and the
# libFuzzer targets (tests/fuzz/), at -O0 with line tables (default dir
# build-san/). Its tests use the demo native service of the release build
# ($RELEASE_BUILD_DIR, default build/), which is built first if need be.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
jobs="${JOBS:-$(nproc)}"
if [ "${SANITIZE:-0}" = 1 ]; then
  build="${BUILD_DIR:-$root/build-san}"
  release="${RELEASE_BUILD_DIR:-$root/build}"
  cmake -S "$root" -B "$release" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  ninja -C "$release" -j "$jobs" postern-demo
  CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -gline-tables-only" -DPOSTERN_SANITIZE=ON -DPOSTERN_FUZZ=ON \
    -DPOSTERN_DEMO_BINARY="$release/bin/postern-demo" ${CMAKE_ARGS:-} >/dev/null
else
  build="${BUILD_DIR:-$root/build}"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" ${CMAKE_ARGS:-} >/dev/null
fi
ninja -C "$build" -j "$jobs"
