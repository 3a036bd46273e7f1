#!/bin/sh
# bench/run_all.sh [--quick]: the whole benchmark suite in one command, as root, after
# scripts/setup.sh (which builds ARCH and installs CRIU, runc, containerd, Podman, gnuplot).
#   1. restore latency (bench/restore_latency.py): create-to-running of a restored
#      container holding 1 GiB (--quick: 256 MiB), with and without lazy pages, against
#      a fresh start, for ARCH, runc alone and Podman;
#   2. the paper's two tables (bench/paper.py): checkpoint to file and restore at 56, 118
#      and 256 MiB, checkpoint time from 1 MiB to 1 GiB untouched and changed;
#   3. finalize against a store throttled to 60 MB/s with and without the deadline plan
#      (bench/deadline_store.py; --quick: 4 containers of 128 MiB), and the sweep of
#      deadlines (10-120 s) and container sizes (64 MiB-1 GiB) against a 30 MB/s store
#      (bench/deadline_store.py --sweep, ~15 min; --quick: 10 and 30 s, up to 256 MiB);
#   4. a spot day (bench/spot_day.py): a CPU-bound job across seeded reclaim notices on the
#      two-node GlusterFS set-up, against uninterrupted and restart from scratch (~5 min;
#      --quick: a job of ~15 s); skipped when GlusterFS is missing;
#   5. the streaming pass for process jobs (bench/stream_job.py): checkpoint and restore of
#      a 256 MiB job through plain image files and through the encrypted image stream,
#      uncompressed and compressed, on random and compressible memory, against the store's
#      own sequential rate; again against a store limited to 30 MB/s (--quick: 64 MiB,
#      unthrottled only);
#   6. the frozen time of a periodic checkpoint (bench/periodic_frozen.py) at 64 MiB and
#      1 GiB (--quick: 64 and 256 MiB);
#   7. container pages through ARCH's page receiver (bench/container_stream.py): 256 MiB and
#      1 GiB containers, pages written by CRIU, streamed and encrypted, against the store's
#      rate (--quick: 256 MiB, one round).
# Prints the tables, writes them as Markdown and JSON under bench/results/<UTC time>/ and
# the PNG plots under bench/plots/. Full run ~8-10 min on 2 cores; --quick ~2 min.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (containers, CRIU)" >&2; exit 1; }
quick=""
latency_args="--mib 1024 --rounds 3"
if [ "${1:-}" = "--quick" ]; then
    quick="--quick"
    latency_args="--mib 256 --rounds 1"
fi
build=${ARCH_BUILD_DIR:-build}
for bin in "$build/src/shim/arch-runc" "$build/src/cli/archctl"; do
    [ -x "$bin" ] || { echo "$bin is missing: run scripts/setup.sh (or build) first" >&2; exit 1; }
done
out="bench/results/$(date -u +%Y%m%dT%H%MZ)"
mkdir -p "$out" bench/plots
python3 bench/restore_latency.py $latency_args --json "$out/restore_latency.json" \
    --plot bench/plots/restore_latency.png | tee "$out/restore_latency.md"
python3 bench/paper.py $quick --json "$out/paper.json" --plot-dir bench/plots \
    | tee "$out/paper.md"
if [ -n "$quick" ]; then
    python3 bench/deadline_store.py --containers 4 --mib 128 --no-write | tee "$out/deadline_store.md"
    python3 bench/deadline_store.py --sweep --sizes 64,64,128,256 --deadlines 10,30 \
        --rate-mb 30 --no-write | tee "$out/deadline_sweep.md"
else
    python3 bench/deadline_store.py --no-write | tee "$out/deadline_store.md"
    python3 bench/deadline_store.py --sweep --rate-mb 30 --no-write | tee "$out/deadline_sweep.md"
fi
if [ -n "$quick" ]; then
    spot_args="--steps 8000000 --mean-interval 6 --scratch-limit 10"
else
    spot_args=""
fi
python3 bench/spot_day.py $spot_args --no-write --plot bench/plots/spot_day.png \
    | tee "$out/spot_day.md" || echo "spot day skipped (see above)" >&2
if [ -n "$quick" ]; then
    python3 bench/stream_job.py --mib 64 --rounds 1 | tee "$out/stream_job.md"
    python3 bench/periodic_frozen.py --rounds 1 --sizes 64,256 --no-results | tee "$out/periodic_frozen.md"
    python3 bench/container_stream.py --sizes 256 --rounds 1 --no-results | tee "$out/container_stream.md"
    python3 bench/migrate.py --sizes 64 --no-results | tee "$out/migrate.md" \
        || echo "migration bench skipped (see above)" >&2
else
    python3 bench/stream_job.py | tee "$out/stream_job.md"
    python3 bench/stream_job.py --mib 128 --rounds 2 --store-mbps 30 \
        | tee "$out/stream_job_30mbps.md" || echo "throttled stream bench skipped (see above)" >&2
    python3 bench/periodic_frozen.py --no-results | tee "$out/periodic_frozen.md"
    python3 bench/container_stream.py --no-results | tee "$out/container_stream.md"
    python3 bench/migrate.py --no-results | tee "$out/migrate.md" \
        || echo "migration bench skipped (see above)" >&2
fi
echo "results: $out/ (Markdown, JSON), plots: bench/plots/" >&2
