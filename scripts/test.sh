#!/usr/bin/env bash
# test.sh: the whole test suite on this machine, from nothing (as root on Debian 12).
#   1. scripts/setup.sh: packages, CRIU, build with warnings as errors, install, node config,
#      the real-workload test image (built in the background during the build, cached) and
#      containerd 2.x/runc 1.3/checkpointctl from Debian forky in /var/cache/arch-test/forky.
#   2. ctest: unit tests (GoogleTest) and end-to-end tests (pytest driving private
#      containerd and dockerd instances that the tests start and stop themselves).
# Extra arguments go to ctest (e.g. `-R e2e` or `-R RuncCommandLine`).
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
build_dir=${ARCH_BUILD_DIR:-$repo/build}

ARCH_CMAKE_ARGS="-DARCH_WERROR=ON -DARCH_BUILD_TESTS=ON ${ARCH_CMAKE_ARGS:-}" \
  ARCH_BUILD_DIR="$build_dir" ARCH_TEST_IMAGE=1 ARCH_TEST_ENGINES=1 "$repo/scripts/setup.sh"

cd "$build_dir"
exec ctest --output-on-failure --parallel "$(nproc)" "$@"
