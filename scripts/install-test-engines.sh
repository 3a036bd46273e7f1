#!/usr/bin/env bash
# install-test-engines.sh [PREFIX]: the newer container engines the e2e tests also run
# against (tests/e2e/test_forky_engines.py): containerd 2.x (containerd, ctr,
# containerd-shim-runc-v2), runc 1.3 and checkpointctl from Debian forky, in a private
# prefix (default /var/cache/arch-test/forky) through install-private-debian.sh: the
# host's own containerd/runc and its libc stay as they are. Quick when run again: a
# prefix whose programs all start is kept. Prints PREFIX on stdout.
#
# Environment:
#   ARCH_TEST_ENGINES_SUITE   Debian suite (default: forky)
#   ARCH_TEST_ENGINES_FORCE=1 reinstall even when the prefix works
set -euo pipefail

ARCH_SCRIPT_NAME=install-test-engines # used by lib.sh
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

case "${1:-}" in
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
        exit 0
        ;;
esac
PREFIX=${1:-/var/cache/arch-test/forky}
PREFIX=${PREFIX%/}
SUITE=${ARCH_TEST_ENGINES_SUITE:-forky}
PACKAGES=(containerd runc checkpointctl)
BINS=(usr/bin/containerd usr/bin/ctr usr/bin/containerd-shim-runc-v2 usr/sbin/runc usr/bin/checkpointctl)
require_root

# version_of NAME: the program's version line (each names its flag differently).
version_of() {
    case $1 in
        containerd-shim-runc-v2) "$PREFIX/bin/$1" -v 2>&1 | awk '/Version:/ {print "containerd-shim-runc-v2 " $2}' ;;
        checkpointctl) "$PREFIX/bin/$1" --help >/dev/null 2>&1 && echo "checkpointctl (starts)" ;;
        *) "$PREFIX/bin/$1" --version 2>&1 | head -1 ;;
    esac
}

works() {
    local b
    for b in "${BINS[@]}"; do
        [[ -n $(version_of "${b##*/}" 2>/dev/null) ]] || return 1
    done
    for b in "${PACKAGES[@]}"; do
        grep -q "^$b " "$PREFIX/ARCH-MANIFEST" 2>/dev/null || return 1
    done
}

if [[ -z ${ARCH_TEST_ENGINES_FORCE:-} ]] && works; then
    log "$PREFIX: $(awk '/^(containerd|runc|checkpointctl) / {printf "%s%s %s", sep, $1, $2; sep=", "}' "$PREFIX/ARCH-MANIFEST") (installed before)"
    printf '%s\n' "$PREFIX"
    exit 0
fi

args=()
for b in "${BINS[@]}"; do args+=(--bin "$b"); done
ARCH_DEBIAN_SUITE=$SUITE "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/install-private-debian.sh" \
    "${args[@]}" --title "Test engines (Debian $SUITE)" "$PREFIX" "${PACKAGES[@]}" ||
    die "installing ${PACKAGES[*]} from Debian $SUITE into $PREFIX failed (see above)"
works || die "$PREFIX was installed but one of its programs does not start"
for b in "${BINS[@]}"; do
    log "$PREFIX/bin/${b##*/}: $(version_of "${b##*/}")"
done
printf '%s\n' "$PREFIX"
