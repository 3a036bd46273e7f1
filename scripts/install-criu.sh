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
#     `criu swrk`) and that never loads a library of the host.
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
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Always taken along: the loader and libc, and libgcc_s, which glibc dlopen()s for
# thread cancellation and unwinding. The rest comes from the ELF closure of criu.
ALWAYS_PKGS=(criu libcompel1 libc6 libgcc-s1)

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
if ! command -v dpkg-deb >/dev/null || ! command -v apt-get >/dev/null; then
    die "no working CRIU, and apt-get/dpkg-deb are missing: cannot install one (Debian only)"
fi
[[ -r $KEYRING ]] || die "$KEYRING missing: install debian-archive-keyring"
command -v patchelf >/dev/null || apt_install patchelf

arch=$(dpkg --print-architecture)
case $arch in
    amd64) triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
    arm64) triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture '$arch' (supported: amd64, arm64)" ;;
esac

# The host's Debian codename, to find the host's own mirror URIs.
host_codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

# host_uri SUITE: the first URI of an enabled host 'deb' source for SUITE.
host_uri() {
    local suite=$1 f
    {
        if [[ -r /etc/apt/sources.list ]]; then
            awk -v s="$suite" '
                $1 == "deb" {
                    i = 2
                    if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == s) { print $i; exit }
                }' /etc/apt/sources.list
        fi
        for f in /etc/apt/sources.list.d/*.sources; do
            [[ -r $f ]] || continue
            # deb822: paragraphs separated by blank lines.
            awk -v s="$suite" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " s " ") && tolower(enabled) != "no" && uris != "") {
                        split(uris, u, " "); print u[1]; found = 1; exit
                    }
                    types = ""; suites = ""; uris = ""; enabled = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                tolower($1) == "types:"   { $1 = ""; types = $0 }
                tolower($1) == "suites:"  { $1 = ""; suites = $0 }
                tolower($1) == "uris:"    { $1 = ""; uris = $0 }
                tolower($1) == "enabled:" { enabled = $2 }
                END { if (!found) flush() }' "$f"
        done
        for f in /etc/apt/sources.list.d/*.list; do
            [[ -r $f ]] || continue
            awk -v s="$suite" '
                $1 == "deb" {
                    i = 2
                    if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == s) { print $i; exit }
                }' "$f"
        done
    } | sed 's/^[ \t]*//' | grep -m1 . || true
}

mirror=${ARCH_DEBIAN_MIRROR:-}
security=""
if [[ -z $mirror && -n $host_codename ]]; then
    mirror=$(host_uri "$host_codename")
    security=$(host_uri "$host_codename-security")
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security=${security%/}

(umask 022 && mkdir -p "$APT_DIR/etc/sources.list.d" "$APT_DIR/etc/preferences.d" \
    "$APT_DIR/state/lists" "$APT_DIR/cache")

# One installer at a time per apt dir.
exec {lock_fd}>"$APT_DIR/lock"
flock -w 600 "$lock_fd" || die "another install-criu.sh holds $APT_DIR/lock"

touch "$APT_DIR/state/status" # an empty dpkg status: nothing counts as installed
{
    echo "# Written by ARCH's install-criu.sh: a private source list, never used by the host's apt."
    echo "deb [signed-by=$KEYRING] $mirror $SUITE main"
    echo "deb [signed-by=$KEYRING] $mirror $SUITE-updates main"
    [[ -n $security ]] && echo "deb [signed-by=$KEYRING] $security $SUITE-security main"
} >"$APT_DIR/etc/sources.list"
cat >"$APT_DIR/apt.conf" <<EOF
// Written by ARCH's install-criu.sh: private apt configuration for Debian $SUITE.
// Read after the host's configuration (apt-get -c), it replaces every place apt
// reads sources from or writes state to, so the host's apt never sees $SUITE.
Dir::State "$APT_DIR/state";
Dir::State::status "$APT_DIR/state/status";
Dir::Cache "$APT_DIR/cache";
Dir::Cache::pkgcache "pkgcache.bin";
Dir::Cache::srcpkgcache "";
Dir::Etc::sourcelist "$APT_DIR/etc/sources.list";
Dir::Etc::sourceparts "$APT_DIR/etc/sources.list.d";
Dir::Etc::preferences "$APT_DIR/etc/preferences";
Dir::Etc::preferencesparts "$APT_DIR/etc/preferences.d";
#clear APT::Update::Post-Invoke-Success;
#clear APT::Update::Post-Invoke;
#clear APT::Architectures;
APT::Architectures { "$arch"; };
APT::Architecture "$arch";
Acquire::Languages "none";
EOF
APT=(-c "$APT_DIR/apt.conf" -q)

timed "apt-get update ($SUITE from $mirror${security:+ and $security}, private config $APT_DIR)" \
    apt-get "${APT[@]}" update >&2 ||
    die "apt-get update of the private $SUITE configuration failed (see above); is $mirror reachable?"

apt-cache "${APT[@]}" show criu >/dev/null 2>&1 || die "no package 'criu' in Debian $SUITE ($mirror)"
criu_version=$(apt-cache "${APT[@]}" policy criu | awk '/Candidate:/ {print $2}')
log "CRIU candidate: criu $criu_version from Debian $SUITE"

# Candidates: the Depends/Pre-Depends closure. Only what criu's ELF closure really
# loads is installed (plus ALWAYS_PKGS); the rest is reported and left out.
mapfile -t candidates < <(apt-cache "${APT[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances "${ALWAYS_PKGS[@]}" |
    grep -v -e '^ ' -e '^<' | sort -u)
[[ ${#candidates[@]} -gt 0 ]] || die "could not compute criu's dependencies"

work=$(mktemp -d "$APT_DIR/work.XXXXXX")
on_exit "rm -rf '$work'"
mkdir "$work/debs" "$work/pkgs"
(cd "$work/debs" &&
    timed "apt-get download ${#candidates[@]} packages" \
        apt-get "${APT[@]}" -o APT::Sandbox::User=root download "${candidates[@]}" >&2) ||
    die "apt-get download failed"

declare -A deb_of=() # package -> .deb
for deb in "$work"/debs/*.deb; do
    pkg=$(dpkg-deb -f "$deb" Package)
    deb_of[$pkg]=$deb
    dpkg-deb -x "$deb" "$work/pkgs/$pkg"
done
for pkg in "${ALWAYS_PKGS[@]}"; do
    [[ -n ${deb_of[$pkg]:-} ]] || [[ $pkg == libgcc-s1 ]] || die "package $pkg was not downloaded"
done
criu_bin=$work/pkgs/criu/usr/sbin/criu
[[ -f $criu_bin ]] || die "criu package has no usr/sbin/criu"

# Index: soname -> "package<TAB>path relative to the package root", searching the
# directories the loader would (multiarch first).
libdirs=("usr/lib/$triplet" "lib/$triplet" usr/lib lib usr/lib64 lib64)
declare -A so_pkg=() so_rel=()
for pkg in "${!deb_of[@]}"; do
    for d in "${libdirs[@]}"; do
        [[ -d $work/pkgs/$pkg/$d ]] || continue
        for f in "$work/pkgs/$pkg/$d"/*.so*; do
            [[ -e $f ]] || continue
            name=${f##*/}
            [[ -n ${so_pkg[$name]:-} ]] && continue
            so_pkg[$name]=$pkg
            so_rel[$name]=$d/$name
        done
    done
done

# Breadth-first walk of DT_NEEDED from criu through the extracted packages.
declare -A needed_pkgs=() seen=() used_dirs=()
for pkg in "${ALWAYS_PKGS[@]}"; do
    if [[ -n ${deb_of[$pkg]:-} ]]; then needed_pkgs[$pkg]=1; fi
done
queue=("$criu_bin")
missing=()
while [[ ${#queue[@]} -gt 0 ]]; do
    f=${queue[0]}
    queue=("${queue[@]:1}")
    while read -r soname; do
        [[ -n $soname ]] || continue
        [[ -n ${seen[$soname]:-} ]] && continue
        seen[$soname]=1
        pkg=${so_pkg[$soname]:-}
        if [[ -z $pkg ]]; then
            missing+=("$soname (needed by ${f#"$work"/pkgs/})")
            continue
        fi
        needed_pkgs[$pkg]=1
        used_dirs[$(dirname "${so_rel[$soname]}")]=1
        queue+=("$(readlink -f "$work/pkgs/$pkg/${so_rel[$soname]}")")
    done < <(patchelf --print-needed "$f")
done
[[ ${#missing[@]} -eq 0 ]] ||
    die "criu's library closure is incomplete in Debian $SUITE's packages: ${missing[*]}"

mapfile -t install_pkgs < <(printf '%s\n' "${!needed_pkgs[@]}" | sort)
mapfile -t skipped < <(comm -23 <(printf '%s\n' "${candidates[@]}") <(printf '%s\n' "${install_pkgs[@]}"))
log "installing ${#install_pkgs[@]} packages: ${install_pkgs[*]}"
[[ ${#skipped[@]} -eq 0 ]] || log "not needed by criu's ELF closure, left out: ${skipped[*]}"

# Build the new prefix next to the old one, then swap it in.
parent=$(dirname "$PREFIX")
(umask 022 && mkdir -p "$parent")
p=$parent
while [[ $p != / ]]; do
    if [[ -n $(find "$p" -maxdepth 0 \( -perm -g+w -o -perm -o+w \) ! -perm -1000 2>/dev/null) ]] ||
        [[ $(stat -c %u "$p") != 0 ]]; then
        warn "$p is not root-owned or is writable by group/others: others could replace the CRIU that root runs"
    fi
    p=$(dirname "$p")
done
stage=$(mktemp -d "$PREFIX.new.XXXXXX")
on_exit "rm -rf '$stage'"
for pkg in "${install_pkgs[@]}"; do
    dpkg-deb -x "${deb_of[$pkg]}" "$stage"
done
mkdir -p "$stage/bin"
mv "$stage/usr/sbin/criu" "$stage/bin/criu"
rm -f "$stage/usr/bin/compel" # a build tool for CRIU plugins; not runnable from here

rpath=""
for d in "${libdirs[@]}"; do
    [[ -n ${used_dirs[$d]:-} ]] && rpath+="${rpath:+:}$PREFIX/$d"
done
[[ -e $stage/usr/lib/$triplet/$loader ]] || die "libc6 has no usr/lib/$triplet/$loader"
# DT_RPATH (not DT_RUNPATH): it also applies to the libraries' own dependencies and
# to dlopen(), so nothing falls through to the host's ld.so.cache.
patchelf --set-interpreter "$PREFIX/usr/lib/$triplet/$loader" --force-rpath --set-rpath "$rpath" \
    "$stage/bin/criu"

{
    echo "# Private CRIU installed by ARCH's install-criu.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# from Debian $SUITE ($mirror${security:+, $security}) for kernel $(uname -r)."
    echo "# bin/criu: interpreter $PREFIX/usr/lib/$triplet/$loader, rpath $rpath"
    for pkg in "${install_pkgs[@]}"; do
        printf '%s %s\n' "$pkg" "$(dpkg-deb -f "${deb_of[$pkg]}" Version)"
    done
} >"$stage/ARCH-CRIU-MANIFEST"

chown -R root:root "$stage"
chmod -R go-w "$stage"
chmod 0755 "$stage"

if [[ -e $PREFIX || -L $PREFIX ]]; then
    old=$(mktemp -d "$PREFIX.old.XXXXXX")
    on_exit "rm -rf '$old'"
    mv "$PREFIX" "$old/"
fi
mv "$stage" "$PREFIX"
log "unpacked into $PREFIX"

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
