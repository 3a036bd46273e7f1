#!/usr/bin/env bash
# setup.sh [--no-build]: prepare a Debian 12 machine (as root) to build, test and
# run ARCH. Idempotent, and quick when run again:
#   1. apt packages: only the missing ones are installed (`apt-get update` only
#      then); daemons are neither started by the packages nor by this script.
#   2. CRIU: scripts/install-criu.sh (a host CRIU that passes `criu check`, else a
#      private one from Debian forky under /opt/arch/criu).
#   3. Build (CMake + Ninja, Release, incremental) and install arch-runc, archctl and
#      archd into /usr/local/bin, and archd.service into /etc/systemd/system (enabled,
#      not started, only where systemd is PID 1).
#   4. Node configuration /etc/arch/arch.conf (written only when absent) and the
#      log directory /var/log/arch.
#   5. The node key that seals checkpoints (`archctl key init`: only when none exists).
#   With ARCH_TEST_IMAGE=1 (scripts/test.sh sets it): the real-workload test image
#   (tests/e2e/archtest/realimage.py: debootstrap + Debian packages, cached under
#   /var/cache/arch-test) is built in the background while ARCH compiles.
#   With ARCH_TEST_ENGINES=1 (scripts/test.sh sets it): containerd 2.x, runc 1.3 and
#   checkpointctl from Debian forky in a private prefix (scripts/install-test-engines.sh,
#   /var/cache/arch-test/forky), for the e2e tests that also run against today's engines.
#
# Options:
#   --no-build   only install dependencies and CRIU, and write the configuration
#   -h, --help   this text
#
# Environment:
#   ARCH_CMAKE_ARGS    extra arguments for the CMake configure step (split on blanks)
#   ARCH_BUILD_DIR     build directory (default: <repo>/build)
#   ARCH_CRIU_PREFIX   where install-criu.sh puts a private CRIU (default: /opt/arch/criu)
#   ARCH_BIN_DIR       where the binaries are installed (default: /usr/local/bin)
#   ARCH_TEST_IMAGE    1: also build the real-workload test image (see above)
#   ARCH_TEST_ENGINES  1: also install the forky test engines (see above)
set -euo pipefail

ARCH_SCRIPT_NAME=setup # used by lib.sh
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit "${1:-0}"
}

build=1
for arg in "$@"; do
    case $arg in
        --no-build) build=0 ;;
        -h | --help) usage 0 ;;
        *)
            echo "unknown argument: $arg" >&2
            usage 2
            ;;
    esac
done

require_root

scripts_dir=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
repo=$(cd "$scripts_dir/.." && pwd)
build_dir=${ARCH_BUILD_DIR:-$repo/build}
criu_prefix=${ARCH_CRIU_PREFIX:-/opt/arch/criu}
bin_dir=${ARCH_BIN_DIR:-/usr/local/bin}
conf_dir=/etc/arch
conf=$conf_dir/arch.conf
log_dir=/var/log/arch
runc_path=/usr/sbin/runc

PACKAGES=(
    # build
    build-essential cmake ninja-build pkg-config git g++
    nlohmann-json3-dev libcli11-dev libfmt-dev libinih-dev libtomlplusplus-dev
    libarchive-dev libssl-dev libzstd-dev libcurl4-openssl-dev libcpp-httplib-dev
    libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
    libgtest-dev libgmock-dev googletest
    clang-format clang-tidy
    # runtime and tests (prometheus: promtool checks archd's metrics)
    runc containerd docker.io iptables busybox-static patchelf python3 python3-pytest prometheus
    iproute2 curl ca-certificates
    # two-node tests: a real shared file system (GlusterFS server and FUSE client)
    glusterfs-server glusterfs-client
    # e2e: read zstd-compressed rootfs diffs ([checkpoint] rootfs_compression = zstd)
    zstd
    # e2e (test_package.py): rotate ARCH's logs with the Debian package's logrotate rules
    logrotate
    # e2e CRI tests: gRPC to containerd's CRI plugin as the kubelet speaks it, and the CNI
    # plugins (bridge, host-local, loopback) that give each pod sandbox its network namespace
    python3-grpcio containernetworking-plugins
    # e2e: archd's status page rendered in a real browser (headless, with a screenshot)
    chromium
    # benchmarks (gnuplot-nox: the suite's PNG plots)
    podman gnuplot-nox
    # e2e real-workload image (tests/e2e/archtest/realimage.py): a Debian rootfs from the mirror
    debootstrap
)

log "repository: $repo"

# ---------------------------------------------------------------------------
# 1. Packages.
timed "apt packages" apt_install "${PACKAGES[@]}"

# ---------------------------------------------------------------------------
# 2. CRIU.
criu=$(timed "CRIU (install-criu.sh $criu_prefix)" "$scripts_dir/install-criu.sh" "$criu_prefix") ||
    die "no working CRIU: scripts/install-criu.sh failed (see above)"
[[ -n $criu && -x $criu ]] || die "install-criu.sh printed no usable CRIU path ('$criu')"

# ---------------------------------------------------------------------------
# 2a. The newer engines some e2e tests also run against (a test skips when they are missing).
if [[ ${ARCH_TEST_ENGINES:-0} == 1 ]]; then
    timed "test engines (install-test-engines.sh)" "$scripts_dir/install-test-engines.sh" >/dev/null ||
        warn "installing the forky test engines failed (their e2e tests will skip)"
fi

# ---------------------------------------------------------------------------
# 2b. The real-workload test image, in the background while ARCH compiles (the two use
#     different resources: the mirror and disk against the CPU). A cached image takes ~1 s.
image_pid=
if [[ ${ARCH_TEST_IMAGE:-0} == 1 ]]; then
    image_log=$(mktemp /tmp/arch-realimage.XXXXXX)
    python3 "$repo/tests/e2e/archtest/realimage.py" build >"$image_log" 2>&1 &
    image_pid=$!
    on_exit "kill $image_pid 2>/dev/null"
    log "real-workload test image: building in the background (pid $image_pid, log $image_log)"
fi

# ---------------------------------------------------------------------------
# 3. Build and install the binaries.
if [[ $build -eq 1 ]]; then
    [[ -f $repo/CMakeLists.txt ]] || die "$repo/CMakeLists.txt not found: nothing to build (use --no-build to skip)"
    cache=$build_dir/CMakeCache.txt
    if [[ -f $cache ]]; then
        gen=$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$cache")
        if [[ -n $gen && $gen != Ninja ]]; then
            die "$build_dir was configured with the '$gen' generator, setup uses Ninja: remove $build_dir or set ARCH_BUILD_DIR"
        fi
    fi
    read -r -a cmake_extra <<<"${ARCH_CMAKE_ARGS:-}"
    timed "cmake configure ($build_dir${cmake_extra[*]:+, extra: ${cmake_extra[*]}})" \
        cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_extra[@]}" >&2 ||
        die "CMake configure failed (see above)"
    timed "build (cmake --build, -j$(nproc))" cmake --build "$build_dir" -j"$(nproc)" >&2 ||
        die "build failed (see above)"

    install -d -m 0755 -o root -g root "$bin_dir"
    for rel in src/shim/arch-runc src/shim/arch-runc-helper src/cli/archctl src/agent/archd; do
        src=$build_dir/$rel
        dst=$bin_dir/$(basename "$rel")
        [[ -f $src && -x $src ]] || die "the build produced no $src"
        if cmp -s "$src" "$dst" && [[ $(stat -c '%u:%g:%a' "$dst") == 0:0:755 ]]; then
            log "$dst is up to date"
        else
            install -m 0755 -o root -g root "$src" "$dst"
            log "installed $dst"
        fi
    done
else
    log "--no-build: not building"
fi

if [[ -n $image_pid ]]; then
    if timed "real-workload test image (waiting for pid $image_pid)" wait "$image_pid"; then
        log "real-workload test image: $(tail -1 "$image_log")"
        rm -f "$image_log"
    else
        warn "building the real-workload test image failed (its tests will try again or skip):"
        tail -20 "$image_log" >&2
    fi
fi

# ---------------------------------------------------------------------------
# 3b. archd's systemd unit: installed always, enabled (not started) only where systemd is
#     PID 1 (containers and chroots have no systemd to talk to).
unit_src=$repo/packaging/archd.service
unit_dst=/etc/systemd/system/archd.service
if [[ $build -eq 1 && -f $unit_src ]]; then
    if cmp -s "$unit_src" "$unit_dst"; then
        log "$unit_dst is up to date"
    else
        install -D -m 0644 -o root -g root "$unit_src" "$unit_dst"
        log "installed $unit_dst"
        if [[ -d /run/systemd/system ]]; then systemctl daemon-reload; fi
    fi
    if [[ -d /run/systemd/system ]]; then
        systemctl is-enabled --quiet archd.service 2>/dev/null ||
            { systemctl enable archd.service >&2 && log "enabled archd.service (start it: systemctl start archd)"; }
    else
        log "PID 1 is not systemd: archd.service installed, not enabled"
    fi
fi

# ---------------------------------------------------------------------------
# 4. Node configuration and log directory.
install -d -m 0755 -o root -g root "$conf_dir"
if [[ ! -e $conf ]]; then
    tmp=$(mktemp "$conf_dir/.arch.conf.XXXXXX")
    on_exit "rm -f '$tmp'"
    cat >"$tmp" <<EOF
# ARCH node configuration (read by arch-runc, archctl and archd).
# Must be owned by root and not writable by group or others, or it is ignored.
[runtime]
# The real runc that arch-runc execs.
runc = $runc_path
# The CRIU binary ARCH passes to runc (--criu) for its own checkpoints.
criu = $criu

[log]
# error | warn | info | debug
level = info
file = $log_dir/arch.log
EOF
    chown root:root "$tmp"
    chmod 0644 "$tmp"
    mv "$tmp" "$conf"
    log "wrote $conf (criu = $criu)"
else
    log "$conf exists: left unchanged"
    if [[ $(stat -c %u "$conf") != 0 ]] || [[ -n $(find "$conf" -maxdepth 0 -perm /022) ]]; then
        warn "$conf is not owned by root or is writable by group/others: ARCH ignores it"
    fi
    conf_criu=$(awk '
        /^[ \t]*\[/ { section = $0; gsub(/[][ \t]/, "", section); next }
        section == "runtime" && /^[ \t]*criu[ \t]*=/ { sub(/^[^=]*=[ \t]*/, ""); sub(/[ \t]+$/, ""); print; exit }' "$conf")
    if [[ -z $conf_criu ]]; then
        log "$conf sets no criu: ARCH uses its default"
    elif ! criu_works "$conf_criu"; then
        warn "$conf: criu = $conf_criu does not pass 'criu check'; a working one is $criu"
    elif [[ $conf_criu != "$criu" ]]; then
        log "$conf: criu = $conf_criu (works; install-criu.sh found $criu)"
    fi
fi
install -d -m 0700 -o root -g root "$log_dir"

# The functional CRIU trial, per socket kind, recorded for `archctl version` and `archctl
# node status` ([runtime] criu_trial, default /var/lib/arch/criu-trial.json).
trial_criu=${conf_criu:-$criu}
if criu_trial_record "$trial_criu" /var/lib/arch/criu-trial.json; then
    log "CRIU trial passed with $trial_criu (recorded in /var/lib/arch/criu-trial.json)"
else
    warn "CRIU trial did not pass every socket kind with $trial_criu (see /var/lib/arch/criu-trial.json)"
fi

# ---------------------------------------------------------------------------
# 5. The node key that seals checkpoints ([keys] dir, default /etc/arch/keys): created
#    when there is none (`archctl key init` keeps an existing one). Nodes that share a
#    store need the same key: `archctl key export` on one, `archctl key import` on the
#    others (or install it from a secrets manager at boot).
archctl_bin=$bin_dir/archctl
[[ -x $archctl_bin ]] || archctl_bin=$build_dir/src/cli/archctl
if [[ -x $archctl_bin ]]; then
    ARCH_CONFIG=$conf "$archctl_bin" key init >&2 || die "archctl key init failed (see above)"
else
    warn "no archctl to run 'archctl key init': checkpoints cannot be sealed until a key exists"
fi

# ---------------------------------------------------------------------------
# Summary.
version() { "$@" 2>/dev/null | head -1 || true; }
log "summary:"
{
    echo "  runc:       $(version runc --version)"
    echo "  containerd: $(version containerd --version)"
    echo "  dockerd:    $(version dockerd --version)"
    docker_cli=$(command -v docker || true)
    if [[ -n $docker_cli ]]; then
        echo "  docker CLI: $docker_cli: $(version "$docker_cli" --version)"
        if [[ $(readlink -f "$docker_cli") != "$(readlink -f /usr/bin/docker)" ]]; then
            echo "              (shadows Debian's /usr/bin/docker: $(version /usr/bin/docker --version))"
        fi
    fi
    echo "  podman:     $(version podman --version)"
    echo "  criu:       $criu ($(version "$criu" --version))"
    if [[ $build -eq 1 ]]; then
        echo "  arch-runc:  $bin_dir/arch-runc"
        echo "  archctl:    $bin_dir/archctl"
        echo "  archd:      $bin_dir/archd (systemd unit $unit_dst)"
    fi
    echo "  config:     $conf"
    echo "  logs:       $log_dir"
} >&2
log "setup finished in $((SECONDS - ARCH_SCRIPT_START)) s"
