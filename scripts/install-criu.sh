#!/usr/bin/env bash
# install-criu.sh [PREFIX]: make a CRIU that works on the running kernel available
# to ARCH, without touching the host's libc or its apt sources.
#
#  1. A host `criu` that works (`criu check` and a trial dump/restore of sockets, see
#     criu_works in lib.sh) is used as it is.
#  2. Else PREFIX/bin/criu (default PREFIX=/opt/arch/criu), when it already passes.
#  3. Else CRIU and its shared-library closure are taken from a newer Debian release
#     (default: forky, CRIU 4.2.1; 4.1.1 from trixie cannot dump INET sockets on
#     Linux >= 6.16) through a private apt configuration under
#     /var/cache/arch/apt-<suite> (the host's sources.list is never changed),
#     unpacked into PREFIX with `dpkg-deb -x`, and PREFIX/bin/criu is rewritten with
#     patchelf (interpreter = PREFIX's own ld.so, DT_RPATH = PREFIX's lib dir), so it
#     is a real ELF binary that runc can exec (`runc --criu PREFIX/bin/criu`, and
#     `criu swrk`; runc 1.2+ finds it on PATH) and that never loads a library of the host.
#     That work is scripts/install-private-debian.sh's (shared with install-test-engines.sh).
#
# On success the CRIU path is the only thing printed on stdout; progress goes to stderr.
#
# Environment:
#   ARCH_CRIU_SUITE      Debian suite to take CRIU from (default: forky)
#   ARCH_CRIU_APT_DIR    private apt state/cache (default: /var/cache/arch/apt-<suite>)
#   ARCH_DEBIAN_MIRROR   Debian mirror URI (default: the URI of the host's own
#                        Debian source, else http://deb.debian.org/debian)
#   ARCH_CRIU_FORCE=1    rebuild PREFIX even if it works (a working host criu still wins)
#   ARCH_VERBOSE=1       show `criu check` output
set -euo pipefail

ARCH_SCRIPT_NAME=install-criu # used by lib.sh
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit "${1:-0}"
}

case "${1:-}" in
    -h | --help) usage 0 ;;
    -*) usage 2 ;;
esac
[[ $# -le 1 ]] || usage 2

PREFIX=${1:-/opt/arch/criu}
PREFIX=${PREFIX%/}
[[ $PREFIX == /* ]] || die "PREFIX must be an absolute path, got '$PREFIX'"
[[ $PREFIX =~ ^[A-Za-z0-9/._+-]+$ ]] || die "PREFIX may only contain [A-Za-z0-9/._+-]: '$PREFIX'"
SUITE=${ARCH_CRIU_SUITE:-forky}
APT_DIR=${ARCH_CRIU_APT_DIR:-/var/cache/arch/apt-$SUITE}

require_root

# ---------------------------------------------------------------------------
# 1. A host criu that works.
host_criu=""
for c in "$(command -v criu 2>/dev/null || true)" /usr/sbin/criu /usr/local/sbin/criu /usr/bin/criu; do
    [[ -n $c && -x $c ]] || continue
    [[ $(readlink -f "$c") == "$(readlink -f "$PREFIX/bin/criu" 2>/dev/null || echo none)" ]] && continue
    host_criu=$c
    if criu_works "$c"; then
        log "host CRIU $c works (criu check and a socket dump/restore trial): using it"
        printf '%s\n' "$c"
        exit 0
    fi
    log "host CRIU $c does not work on this kernel ($(uname -r)); not using it"
    break
done
[[ -n $host_criu ]] || log "no host CRIU installed"

# ---------------------------------------------------------------------------
# 2. A private CRIU installed before.
if [[ -z ${ARCH_CRIU_FORCE:-} ]] && criu_works "$PREFIX/bin/criu"; then
    log "private CRIU $PREFIX/bin/criu works"
    printf '%s\n' "$PREFIX/bin/criu"
    exit 0
fi
[[ -e $PREFIX/bin/criu ]] && log "$PREFIX/bin/criu exists but does not work here: reinstalling"

# ---------------------------------------------------------------------------
# 3. Install a private CRIU from Debian $SUITE.
# The download, unpacking and patchelf work is install-private-debian.sh's (shared with the
# newer engines setup.sh installs for the e2e tests).
ARCH_SCRIPT_NAME=install-criu ARCH_DEBIAN_SUITE=$SUITE ARCH_APT_DIR=$APT_DIR \
    "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/install-private-debian.sh" \
    --bin usr/sbin/criu --drop usr/bin/compel --manifest ARCH-CRIU-MANIFEST --title "Private CRIU" \
    "$PREFIX" criu libcompel1 ||
    die "installing CRIU from Debian $SUITE into $PREFIX failed (see above)"
# usr/bin/compel: a build tool for CRIU plugins; not runnable from there.
arch=$(dpkg --print-architecture)
case $arch in
    amd64) triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
    arm64) triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture '$arch' (supported: amd64, arm64)" ;;
esac

# ---------------------------------------------------------------------------
# Verify: every library resolves inside PREFIX, at link time and at run time.
ldso=$PREFIX/usr/lib/$triplet/$loader
listing=$("$ldso" --list "$PREFIX/bin/criu" 2>&1) || die "loader cannot load $PREFIX/bin/criu: $listing"
bad=$(awk -v p="$PREFIX/" '
    /not found/ { print; next }
    /=>/ { if (index($3, p) != 1) print; next }
    $1 ~ /^\// { if (index($1, p) != 1) print }' <<<"$listing")
[[ -z $bad ]] || die "$PREFIX/bin/criu resolves libraries outside $PREFIX: $bad"

loaded=$(LD_DEBUG=libs "$PREFIX/bin/criu" check 2>&1 | sed -n 's/.*calling init: //p' | sort -u)
bad=$(grep -v "^$PREFIX/" <<<"$loaded" || true)
[[ -z $bad ]] || die "$PREFIX/bin/criu loads libraries from outside $PREFIX at run time: $bad"

if ! ARCH_VERBOSE=1 criu_works "$PREFIX/bin/criu"; then
    die "$PREFIX/bin/criu was installed but 'criu check' fails on kernel $(uname -r) (output above)"
fi
log "$PREFIX/bin/criu: $("$PREFIX/bin/criu" --version 2>/dev/null | head -1), 'criu check': Looks good."
log "$(grep -c . <<<"$loaded") shared objects loaded, all from $PREFIX"

for t in iptables-restore ip6tables-restore; do
    command -v "$t" >/dev/null ||
        warn "$t not found: CRIU needs it to lock the network of containers (install Debian's iptables)"
done
printf '%s\n' "$PREFIX/bin/criu"
