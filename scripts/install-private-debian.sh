#!/usr/bin/env bash
# install-private-debian.sh [options] PREFIX PACKAGE...: install programs from a newer
# Debian suite into a private prefix, without touching the host's libc, its packages or
# its apt sources. install-criu.sh uses it for CRIU; setup.sh for the engines the e2e
# tests also run against (containerd 2.x, runc 1.3, checkpointctl from Debian forky).
#
#  1. A private apt configuration under /var/cache/arch/apt-<suite> (the host's
#     sources.list is never changed) downloads PACKAGEs and their Depends closure.
#  2. Only the packages that the ELF closure of the chosen binaries really loads (plus
#     PACKAGEs and libc6/libgcc-s1) are unpacked into PREFIX with `dpkg-deb -x`.
#  3. Each binary named with --bin is moved to PREFIX/bin and rewritten with patchelf
#     (interpreter = PREFIX's own ld.so, DT_RPATH = PREFIX's lib dirs), so it is a real
#     ELF program that never loads a library of the host (checked afterwards).
#  4. PREFIX/<manifest> lists the packages and versions.
#
# PREFIX is built next to the old one and swapped in. On success nothing is printed on
# stdout; progress goes to stderr.
#
# Options:
#   --bin PATH         a binary inside the packages (e.g. usr/sbin/runc) to move to
#                      PREFIX/bin and patch (repeatable; at least one)
#   --drop PATH        a file not to install (repeatable)
#   --manifest NAME    manifest file name in PREFIX (default: ARCH-MANIFEST)
#   --title TEXT       what the manifest says was installed (default: the packages)
#
# Environment:
#   ARCH_DEBIAN_SUITE    Debian suite (default: forky)
#   ARCH_APT_DIR         private apt state/cache (default: /var/cache/arch/apt-<suite>)
#   ARCH_DEBIAN_MIRROR   Debian mirror URI (default: the URI of the host's own Debian
#                        source, else http://deb.debian.org/debian)
set -euo pipefail

ARCH_SCRIPT_NAME=${ARCH_SCRIPT_NAME:-install-private-debian} # used by lib.sh
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit "${1:-0}"
}

bins=() drops=() manifest_name=ARCH-MANIFEST title=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --bin) bins+=("${2:?--bin needs a path}"); shift 2 ;;
        --drop) drops+=("${2:?--drop needs a path}"); shift 2 ;;
        --manifest) manifest_name=${2:?--manifest needs a name}; shift 2 ;;
        --title) title=${2:?--title needs a text}; shift 2 ;;
        -h | --help) usage 0 ;;
        --) shift; break ;;
        -*) usage 2 ;;
        *) break ;;
    esac
done
[[ $# -ge 2 && ${#bins[@]} -gt 0 ]] || usage 2

PREFIX=${1%/}
shift
PACKAGES=("$@")
[[ $PREFIX == /* ]] || die "PREFIX must be an absolute path, got '$PREFIX'"
[[ $PREFIX =~ ^[A-Za-z0-9/._+-]+$ ]] || die "PREFIX may only contain [A-Za-z0-9/._+-]: '$PREFIX'"
[[ $manifest_name =~ ^[A-Za-z0-9._-]+$ ]] || die "bad manifest name '$manifest_name'"
SUITE=${ARCH_DEBIAN_SUITE:-forky}
APT_DIR=${ARCH_APT_DIR:-/var/cache/arch/apt-$SUITE}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Always taken along: the loader and libc, and libgcc_s, which glibc dlopen()s for
# thread cancellation and unwinding. The rest comes from the ELF closure of the binaries.
ALWAYS_PKGS=("${PACKAGES[@]}" libc6 libgcc-s1)

require_root
if ! command -v dpkg-deb >/dev/null || ! command -v apt-get >/dev/null; then
    die "apt-get/dpkg-deb are missing: cannot install from Debian $SUITE (Debian only)"
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
flock -w 600 "$lock_fd" || die "another installer holds $APT_DIR/lock"

touch "$APT_DIR/state/status" # an empty dpkg status: nothing counts as installed
{
    echo "# Written by ARCH's install-private-debian.sh: a private source list, never used by the host's apt."
    echo "deb [signed-by=$KEYRING] $mirror $SUITE main"
    echo "deb [signed-by=$KEYRING] $mirror $SUITE-updates main"
    [[ -n $security ]] && echo "deb [signed-by=$KEYRING] $security $SUITE-security main"
} >"$APT_DIR/etc/sources.list"
cat >"$APT_DIR/apt.conf" <<EOF
// Written by ARCH's install-private-debian.sh: private apt configuration for Debian $SUITE.
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

for pkg in "${PACKAGES[@]}"; do
    apt-cache "${APT[@]}" show "$pkg" >/dev/null 2>&1 || die "no package '$pkg' in Debian $SUITE ($mirror)"
    log "candidate: $pkg $(apt-cache "${APT[@]}" policy "$pkg" | awk '/Candidate:/ {print $2}') from Debian $SUITE"
done

# Candidates: the Depends/Pre-Depends closure. Only what the binaries' ELF closure really
# loads is installed (plus ALWAYS_PKGS); the rest is reported and left out.
mapfile -t candidates < <(apt-cache "${APT[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances "${ALWAYS_PKGS[@]}" |
    grep -v -e '^ ' -e '^<' | sort -u)
[[ ${#candidates[@]} -gt 0 ]] || die "could not compute the dependencies of ${PACKAGES[*]}"

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

# Where each --bin comes from.
declare -A bin_src=() # bin path -> extracted file
for b in "${bins[@]}"; do
    for pkg in "${PACKAGES[@]}"; do
        if [[ -f $work/pkgs/$pkg/$b ]]; then
            bin_src[$b]=$work/pkgs/$pkg/$b
            break
        fi
    done
    [[ -n ${bin_src[$b]:-} ]] || die "no package of ${PACKAGES[*]} has $b"
done

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

# Breadth-first walk of DT_NEEDED from the binaries through the extracted packages.
declare -A needed_pkgs=() seen=() used_dirs=()
for pkg in "${ALWAYS_PKGS[@]}"; do
    if [[ -n ${deb_of[$pkg]:-} ]]; then needed_pkgs[$pkg]=1; fi
done
queue=()
for b in "${bins[@]}"; do queue+=("${bin_src[$b]}"); done
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
    done < <(patchelf --print-needed "$f" 2>/dev/null || true) # a static binary has no dynamic section
done
[[ ${#missing[@]} -eq 0 ]] ||
    die "the library closure is incomplete in Debian $SUITE's packages: ${missing[*]}"

mapfile -t install_pkgs < <(printf '%s\n' "${!needed_pkgs[@]}" | sort)
mapfile -t skipped < <(comm -23 <(printf '%s\n' "${candidates[@]}") <(printf '%s\n' "${install_pkgs[@]}"))
log "installing ${#install_pkgs[@]} packages: ${install_pkgs[*]}"
[[ ${#skipped[@]} -eq 0 ]] || log "not needed by the binaries' ELF closure, left out: ${skipped[*]}"

# Build the new prefix next to the old one, then swap it in.
parent=$(dirname "$PREFIX")
(umask 022 && mkdir -p "$parent")
p=$parent
while [[ $p != / ]]; do
    if [[ -n $(find "$p" -maxdepth 0 \( -perm -g+w -o -perm -o+w \) ! -perm -1000 2>/dev/null) ]] ||
        [[ $(stat -c %u "$p") != 0 ]]; then
        warn "$p is not root-owned or is writable by group/others: others could replace the programs that root runs"
    fi
    p=$(dirname "$p")
done
stage=$(mktemp -d "$PREFIX.new.XXXXXX")
on_exit "rm -rf '$stage'"
for pkg in "${install_pkgs[@]}"; do
    dpkg-deb -x "${deb_of[$pkg]}" "$stage"
done
for d in "${drops[@]}"; do rm -f "$stage/$d"; done
mkdir -p "$stage/bin"

rpath=""
for d in "${libdirs[@]}"; do
    [[ -n ${used_dirs[$d]:-} ]] && rpath+="${rpath:+:}$PREFIX/$d"
done
[[ -e $stage/usr/lib/$triplet/$loader ]] || die "libc6 has no usr/lib/$triplet/$loader"
patched=()
for b in "${bins[@]}"; do
    name=${b##*/}
    mv "$stage/$b" "$stage/bin/$name"
    if patchelf --print-interpreter "$stage/bin/$name" >/dev/null 2>&1; then
        # DT_RPATH (not DT_RUNPATH): it also applies to the libraries' own dependencies and
        # to dlopen(), so nothing falls through to the host's ld.so.cache.
        patchelf --set-interpreter "$PREFIX/usr/lib/$triplet/$loader" --force-rpath --set-rpath "$rpath" \
            "$stage/bin/$name"
        patched+=("$name")
    fi
done

{
    echo "# ${title:-${PACKAGES[*]}} installed by ARCH's install-private-debian.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# from Debian $SUITE ($mirror${security:+, $security}) for kernel $(uname -r)."
    for name in "${patched[@]}"; do
        echo "# bin/$name: interpreter $PREFIX/usr/lib/$triplet/$loader, rpath $rpath"
    done
    for pkg in "${install_pkgs[@]}"; do
        printf '%s %s\n' "$pkg" "$(dpkg-deb -f "${deb_of[$pkg]}" Version)"
    done
} >"$stage/$manifest_name"

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
# Verify: every library of every patched binary resolves inside PREFIX.
ldso=$PREFIX/usr/lib/$triplet/$loader
for name in "${patched[@]}"; do
    listing=$("$ldso" --list "$PREFIX/bin/$name" 2>&1) || die "loader cannot load $PREFIX/bin/$name: $listing"
    bad=$(awk -v p="$PREFIX/" '
        /not found/ { print; next }
        /=>/ { if (index($3, p) != 1) print; next }
        $1 ~ /^\// { if (index($1, p) != 1) print }' <<<"$listing")
    [[ -z $bad ]] || die "$PREFIX/bin/$name resolves libraries outside $PREFIX: $bad"
done
