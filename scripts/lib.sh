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
    [[ $(id -u) -eq 0 ]] || die "must run as root (a root shell; sudo is not on a fresh Debian 12)"
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

# criu_works PATH: true when PATH is an executable whose `criu check` passes AND that
# really dumps and restores on this kernel (criu_trial). `criu check` alone is not enough:
# CRIU 4.1.1 passes it on Linux >= 6.16 but cannot dump any INET socket there, and on some
# CPUs hangs curing its parasite from every process. Output goes to stderr only when
# ARCH_VERBOSE is set.
criu_works() {
    local criu=$1 out
    [[ -x $criu ]] || return 1
    if out=$(timeout 60 "$criu" check 2>&1) && grep -q 'Looks good' <<<"$out"; then
        [[ -n ${ARCH_VERBOSE:-} ]] && printf '%s\n' "$out" >&2
        criu_trial "$criu"
    else
        [[ -n ${ARCH_VERBOSE:-} ]] && printf '%s\n' "$out" >&2
        return 1
    fi
}

# criu_trial PATH [MODE]: dump and restore (each bounded by a timeout) a Python process that
# holds, for MODE all (the default), a listening TCP socket, an established TCP pair over
# loopback and a unix socket pair (or only one of them: listen, established, unix); true
# when the restored process answers a counter read through its own sockets. Needs python3.
criu_trial() {
    local criu=$1 mode=${2:-all} dir pid rc=1 line
    local py
    py=$(command -v /usr/bin/python3 || command -v python3) || { log "criu trial skipped: no python3"; return 0; }
    dir=$(mktemp -d /tmp/arch-criu-trial.XXXXXX)
    cat >"$dir/trial.py" <<'PY'
import os, socket, sys, time
os.closerange(3, 65536)  # no inherited fds (a caller's lock file would need --file-locks)
mode = sys.argv[2]
srv = cli = acc = a = b = None
if mode in ("all", "listen", "established"):
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
if mode in ("all", "established"):
    cli = socket.create_connection(srv.getsockname()); acc, _ = srv.accept()
if mode in ("all", "unix"):
    a, b = socket.socketpair()
n = 0
while True:
    n += 1
    if cli: cli.sendall(b"x"); acc.recv(1)
    if a: a.sendall(b"y"); b.recv(1)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(n))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(0.02)
PY
    (cd "$dir" && exec setsid "$py" trial.py count "$mode" </dev/null >/dev/null 2>&1) &
    pid=$!
    disown "$pid"  # CRIU's dump kills it: no "Killed" job notice in setup's output
    for _ in $(seq 100); do [[ -s $dir/count ]] && break; sleep 0.05; done
    mkdir "$dir/img"
    if (cd "$dir" && timeout 30 "$criu" dump -t "$pid" -D "$dir/img" -o dump.log --tcp-established \
        --ext-unix-sk --shell-job >/dev/null 2>&1); then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        wait "$pid" 2>/dev/null || true
        line=$(cat "$dir/count")
        if (cd "$dir" && timeout 30 "$criu" restore -D "$dir/img" -o restore.log --tcp-established \
            --ext-unix-sk --shell-job -d >/dev/null 2>&1); then
            for _ in $(seq 100); do
                [[ $(cat "$dir/count" 2>/dev/null) -gt $((line + 2)) ]] && { rc=0; break; }
                sleep 0.05
            done
        fi
    fi
    [[ $rc -eq 0 ]] || log "criu trial ($mode) failed with $criu (logs: $dir/img/dump.log, restore.log)"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # A hung dump leaves CRIU's own processes, and a restore its restored one: end them by
    # pid (those whose cwd is ours).
    for p in $(ls /proc | grep -E '^[0-9]+$'); do
        [[ $(readlink "/proc/$p/cwd" 2>/dev/null) == "$dir"* ]] && kill -9 "$p" 2>/dev/null
    done
    [[ $rc -eq 0 ]] && rm -rf "$dir"
    return $rc
}

# criu_trial_record PATH FILE: runs criu_trial once per socket kind and writes what passed to
# FILE (JSON, root-owned 0644, replaced atomically), which `archctl version` and `archctl
# node status` show ([runtime] criu_trial). Returns 0 when every kind passed.
criu_trial_record() {
    local criu=$1 file=$2 version kernel when tmp all=true kind ok json=""
    version=$("$criu" --version 2>/dev/null | awk '/^Version:/ {print $2; exit}')
    kernel=$(uname -r)
    when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    for kind in listen established unix; do
        if criu_trial "$criu" "$kind"; then ok=true; else ok=false; all=false; fi
        json+="${json:+, }\"$kind\": $ok"
    done
    install -d -m 0755 -o root -g root "$(dirname "$file")"
    tmp=$(mktemp "$file.XXXXXX")
    printf '{"criu": "%s", "version": "%s", "kernel": "%s", "time": "%s", "passed": %s, "checks": {%s}}\n' \
        "$criu" "$version" "$kernel" "$when" "$all" "$json" >"$tmp"
    chown root:root "$tmp"
    chmod 0644 "$tmp"
    mv "$tmp" "$file"
    [[ $all == true ]]
}
