# shellcheck shell=bash
# Shared helpers for ARCH's setup scripts. Source it; do not execute it.
#
# Every message goes to stderr, so that a script's stdout can carry a single
# result (install-criu.sh prints the CRIU path there).

if [[ -n "${ARCH_LIB_SH_LOADED:-}" ]]; then
    return 0
fi
ARCH_LIB_SH_LOADED=1

ARCH_SCRIPT_NAME=${ARCH_SCRIPT_NAME:-$(basename "$0")}
ARCH_SCRIPT_START=${ARCH_SCRIPT_START:-$SECONDS}

# Debian tools must never stop to ask a question.
export DEBIAN_FRONTEND=noninteractive
# Root scripts on a minimal PATH still need the sbin directories.
case ":$PATH:" in
    *:/usr/sbin:*) ;;
    *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac
export PATH

log() {
    printf '[%s %s] %s\n' "$ARCH_SCRIPT_NAME" "$(date +%H:%M:%S)" "$*" >&2
}

warn() {
    printf '[%s %s] WARNING: %s\n' "$ARCH_SCRIPT_NAME" "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    printf '[%s %s] ERROR: %s\n' "$ARCH_SCRIPT_NAME" "$(date +%H:%M:%S)" "$*" >&2
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"
}

# timed DESCRIPTION CMD [ARGS...]: run CMD, log how long it took, keep its status.
timed() {
    local what=$1 start=$SECONDS rc=0
    shift
    log "$what ..."
    "$@" || rc=$?
    if [[ $rc -eq 0 ]]; then
        log "$what: done in $((SECONDS - start)) s"
    else
        log "$what: FAILED (exit $rc) after $((SECONDS - start)) s"
    fi
    return "$rc"
}

# apt_missing PKG...: print the packages (one a line) that dpkg does not list
# as fully installed.
apt_missing() {
    local p status
    for p in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [[ $status == "ii "* ]] || printf '%s\n' "$p"
    done
}

# on_exit CMD: run CMD (a string, eval'ed) when the script exits; commands run
# in reverse order of registration. Scripts use this instead of `trap ... EXIT`.
_arch_exit_cmds=()
_arch_run_exit_cmds() {
    local i
    for ((i = ${#_arch_exit_cmds[@]} - 1; i >= 0; i--)); do
        eval "${_arch_exit_cmds[i]}" || true
    done
}
on_exit() {
    _arch_exit_cmds+=("$1")
    trap _arch_run_exit_cmds EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Created by apt_install while it runs; removed again afterwards.
ARCH_POLICY_RC_D=/usr/sbin/policy-rc.d
_arch_policy_created=0

_arch_policy_cleanup() {
    if [[ $_arch_policy_created -eq 1 ]]; then
        rm -f "$ARCH_POLICY_RC_D"
        _arch_policy_created=0
    fi
}

# apt_install PKG...: install the packages that are missing (and run
# `apt-get update` first, only then). Daemons that packages would start from
# their maintainer scripts (docker, containerd ...) are kept from starting by a
# temporary policy-rc.d, unless the host already has its own.
apt_install() {
    local missing
    mapfile -t missing < <(apt_missing "$@")
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "apt: all ${#} packages already installed"
        return 0
    fi
    log "apt: missing ${#missing[@]} package(s): ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian only"
    if [[ ! -e $ARCH_POLICY_RC_D ]]; then
        printf '#!/bin/sh\n# Temporary, from ARCH setup: start no daemons while installing.\nexit 101\n' \
            >"$ARCH_POLICY_RC_D"
        chmod 0755 "$ARCH_POLICY_RC_D"
        _arch_policy_created=1
        on_exit _arch_policy_cleanup
    fi
    local rc=0
    timed "apt-get update" apt-get -q update >&2 || rc=$?
    if [[ $rc -eq 0 ]]; then
        timed "apt-get install ${missing[*]}" \
            apt-get -q -y --no-install-recommends install "${missing[@]}" >&2 || rc=$?
    fi
    _arch_policy_cleanup
    [[ $rc -eq 0 ]] || die "apt failed (exit $rc) while installing: ${missing[*]}"
    mapfile -t missing < <(apt_missing "$@")
    [[ ${#missing[@]} -eq 0 ]] || die "still not installed after apt-get install: ${missing[*]}"
}

# criu_works PATH: true when PATH is an executable whose `criu check` passes.
# Its output goes to stderr only when ARCH_VERBOSE is set.
criu_works() {
    local criu=$1 out
    [[ -x $criu ]] || return 1
    if out=$("$criu" check 2>&1); then
        [[ -n ${ARCH_VERBOSE:-} ]] && printf '%s\n' "$out" >&2
        grep -q 'Looks good' <<<"$out"
    else
        [[ -n ${ARCH_VERBOSE:-} ]] && printf '%s\n' "$out" >&2
        return 1
    fi
}
