#!/usr/bin/env bash
# Builds ARCH's libFuzzer targets (fuzz/, with clang) and runs each for a bounded time
# with a seed corpus: the golden runc command lines of tests/golden and small generated
# inputs (a spec, a manifest, a rootfs diff, a job archive, zstd frames).
# Not part of the test command. Usage: scripts/fuzz.sh [SECONDS per target] [TARGET...]
# Findings (crash-*, leak-*, timeout-*) are left in build-fuzz/findings/<target>/.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
build=${ARCH_FUZZ_BUILD:-$here/build-fuzz}

# clang (Debian 12's clang 14) and its libFuzzer runtime.
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz.sh: installing clang and libclang-rt-dev" >&2
  apt-get install -y clang libclang-rt-dev >&2
fi

CC=clang CXX=clang++ cmake -S "$here/fuzz" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=None >/dev/null
ninja -C "$build" ${ARCH_FUZZ_JOBS:+-j$ARCH_FUZZ_JOBS} >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then  # every target fuzz/CMakeLists.txt builds
  for exe in "$build"/*_fuzz; do
    name=$(basename "$exe")
    targets+=("${name%_fuzz}")
  done
fi

seeds="$build/seeds"
rm -rf "$seeds"
mkdir -p "$seeds"
python3 "$here/fuzz/make_seeds.py" "$here" "$seeds"

scratch=$(mktemp -d /dev/shm/arch-fuzz-XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
printf '%-18s %12s %8s %s\n' target executions findings corpus
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  findings="$build/findings/$t"
  mkdir -p "$corpus" "$findings"
  cp -n "$seeds/$t"/* "$corpus"/ 2>/dev/null || true
  log="$build/findings/$t.log"
  ARCH_FUZZ_TMP="$scratch" "$build/${t}_fuzz" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$findings/" -print_final_stats=1 \
    "$corpus" >"$log" 2>&1 || true
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  found=$(find "$findings" -maxdepth 1 -type f | wc -l)
  printf '%-18s %12s %8s %s\n' "$t" "${runs:-?}" "$found" "$(ls "$corpus" | wc -l) inputs"
done
