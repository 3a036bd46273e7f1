#!/usr/bin/env bash
# build-deb.sh BUILD_DIR OUT_DIR: the Debian package arch_<version>_<arch>.deb (dpkg-deb)
# from an already-built tree; prints the package's path on stdout.
#
# Contents:
#   /usr/bin/{arch-runc,arch-runc-helper,archctl,archd}   from BUILD_DIR
#   /usr/lib/arch/criu       the private CRIU prefix that scripts/install-criu.sh made
#                            (ARCH_CRIU_PREFIX, default /opt/arch/criu), copied, with
#                            bin/criu's interpreter and rpath rewritten for the new prefix
#   /lib/systemd/system/{archd.service,arch-gc.service,arch-gc.timer}
#   /etc/arch/arch.conf      conffile: `archctl config init` with [runtime] criu set to
#                            the bundled CRIU
#   /etc/logrotate.d/arch    conffile
#   maintainer scripts from packaging/debian/ (postinst, prerm, postrm)
# Depends: the shared libraries' packages (dpkg-shlibdeps, from dpkg-dev, which
# build-essential brings) plus runc and iproute2.
#
# Environment:
#   ARCH_CRIU_PREFIX       the private CRIU to bundle (default: /opt/arch/criu)
#   ARCH_DEB_VERSION       package version (default: the CMake project version of BUILD_DIR)
#   ARCH_DEB_COMPRESSION   dpkg-deb -Z: zstd (default; dpkg >= 1.21.18, Debian 12), xz, gzip, none
#   ARCH_DEB_LINTIAN       0: do not run lintian on the package (default: run it when installed)
set -euo pipefail

ARCH_SCRIPT_NAME=build-deb # used by lib.sh
packaging_dir=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
repo=$(cd "$packaging_dir/.." && pwd)
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit "${1:-0}"
}
case "${1:-}" in -h | --help) usage 0 ;; esac
[[ $# -eq 2 ]] || usage 2

build_dir=$(readlink -f "$1")
out_dir=$2
criu_src=${ARCH_CRIU_PREFIX:-/opt/arch/criu}
criu_src=${criu_src%/}
criu_dst=/usr/lib/arch/criu
compression=${ARCH_DEB_COMPRESSION:-zstd}
umask 022

for tool in dpkg-deb dpkg-shlibdeps patchelf; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: dpkg-dev for dpkg-shlibdeps, patchelf)"
done
bins=(src/shim/arch-runc src/shim/arch-runc-helper src/cli/archctl src/agent/archd)
for rel in "${bins[@]}"; do
    [[ -f $build_dir/$rel && -x $build_dir/$rel ]] || die "$build_dir/$rel is not built (ninja -C $build_dir)"
done
[[ -f $criu_src/bin/criu && -f $criu_src/ARCH-CRIU-MANIFEST ]] ||
    die "no private CRIU at $criu_src (scripts/install-criu.sh makes it; set ARCH_CRIU_PREFIX)"

version=${ARCH_DEB_VERSION:-$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build_dir/CMakeCache.txt")}
[[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "no usable package version ('$version'): set ARCH_DEB_VERSION"
deb_arch=$(dpkg --print-architecture)
case $deb_arch in
    amd64) triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
    arm64) triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture '$deb_arch' (supported: amd64, arm64)" ;;
esac

work=$(mktemp -d /tmp/arch-deb.XXXXXX)
on_exit "rm -rf '$work'"
# dpkg-shlibdeps wants debian/control and the files under debian/<package>/.
mkdir -p "$work/debian"
printf 'Source: arch\n\nPackage: arch\nArchitecture: any\n' >"$work/debian/control"
root=$work/debian/arch
mkdir -p "$root/DEBIAN"

# ---------------------------------------------------------------------------
# Binaries.
for rel in "${bins[@]}"; do
    install -D -m 0755 "$build_dir/$rel" "$root/usr/bin/${rel##*/}"
done

# ---------------------------------------------------------------------------
# The bundled CRIU: its loader and rpath name the prefix, so bin/criu is rewritten for
# the new one; nothing else in the tree names it (checked below).
mkdir -p "$root$criu_dst"
cp -a "$criu_src/." "$root$criu_dst/" # the tree's contents, even when criu_src is a symlink
chmod -R u+w,go-w "$root$criu_dst"
# The prefix install-criu.sh built it for (criu_src may be a symlink to it), from its loader.
old_interp=$(patchelf --print-interpreter "$criu_src/bin/criu")
old_prefix=${old_interp%/usr/lib/"$triplet"/"$loader"}
[[ $old_prefix != "$old_interp" ]] || die "$criu_src/bin/criu's loader is $old_interp, not a private prefix's"
old_rpath=$(patchelf --print-rpath "$criu_src/bin/criu")
new_rpath=${old_rpath//$old_prefix\//$criu_dst/}
new_interp=$criu_dst/usr/lib/$triplet/$loader
[[ -e $root$new_interp ]] || die "$criu_src has no usr/lib/$triplet/$loader"
patchelf --set-interpreter "$new_interp" --force-rpath --set-rpath "$new_rpath" "$root$criu_dst/bin/criu"
[[ $(patchelf --print-interpreter "$root$criu_dst/bin/criu") == "$new_interp" ]] || die "patchelf: interpreter not set"
IFS=: read -r -a rpath_dirs <<<"$new_rpath"
for d in "${rpath_dirs[@]}"; do
    [[ $d == "$criu_dst"/* ]] || die "bin/criu's rpath names $d, outside $criu_dst (was: $old_rpath)"
done
manifest=$root$criu_dst/ARCH-CRIU-MANIFEST
sed -i -e "s|^# bin/criu: .*|# bin/criu: interpreter $new_interp, rpath $new_rpath|" \
    -e "/^# bin\/criu: /a # Copied from $old_prefix into the arch $version package at $criu_dst by packaging/build-deb.sh." \
    "$manifest"
grep -q "^# Copied from $old_prefix" "$manifest" || die "$manifest has no '# bin/criu:' line"
leftover=$(grep -rlF -- "$old_prefix" "$root$criu_dst" | grep -vxF "$manifest" || true)
[[ -z $leftover ]] || die "files of the bundled CRIU still name $old_prefix: $leftover"
# The staged loader runs the staged binary (its rpath points at the not yet installed prefix).
"$root$new_interp" --library-path "$root$criu_dst/usr/lib/$triplet" "$root$criu_dst/bin/criu" --version >/dev/null ||
    die "the bundled CRIU does not start"

# ---------------------------------------------------------------------------
# systemd units, logrotate, docs.
units=$root/lib/systemd/system
install -d "$units"
sed -e 's|^ExecStart=/usr/local/bin/archd |ExecStart=/usr/bin/archd |' \
    -e 's|^# Installed by scripts/setup.sh.*|# Installed by the arch package (built by packaging/build-deb.sh).|' \
    "$packaging_dir/archd.service" >"$units/archd.service"
grep -q '^ExecStart=/usr/bin/archd ' "$units/archd.service" || die "archd.service: ExecStart not rewritten"
install -m 0644 "$packaging_dir/arch-gc.service" "$packaging_dir/arch-gc.timer" "$units/"
install -D -m 0644 "$packaging_dir/logrotate.arch" "$root/etc/logrotate.d/arch"
install -D -m 0644 "$packaging_dir/debian/copyright" "$root/usr/share/doc/arch/copyright"

# ---------------------------------------------------------------------------
# The node config: archctl's own default text (every known key), with the bundled CRIU.
conf=$root/etc/arch/arch.conf
env -u ARCH_CONFIG "$build_dir/src/cli/archctl" config init --path "$conf" >/dev/null
awk -v criu="$criu_dst/bin/criu" '
    /^\[/ { section = $0 }
    section == "[runtime]" && /^criu[ \t]*=/ && !done {
        print "# The package sets the CRIU it bundles (" criu ")."
        print "criu = " criu
        done = 1
        next
    }
    { print }
    END { if (!done) exit 1 }' "$conf" >"$conf.new" || die "archctl config init wrote no [runtime] criu key"
mv "$conf.new" "$conf"
chmod 0644 "$conf"
if [[ $(id -u) -eq 0 ]]; then # config check also wants the file root-owned
    env -u ARCH_CONFIG "$build_dir/src/cli/archctl" config check "$conf" >/dev/null ||
        die "the packaged $conf does not pass archctl config check"
fi

# ---------------------------------------------------------------------------
# Control files.
for s in postinst prerm postrm; do
    install -m 0755 "$packaging_dir/debian/$s" "$root/DEBIAN/$s"
done
printf '/etc/arch/arch.conf\n/etc/logrotate.d/arch\n' >"$root/DEBIAN/conffiles"
# (Its warning that the binaries are not "installed in their package's directory" is wrong:
# they are, under debian/arch with DEBIAN/ beside them.)
shlibs=$(cd "$work" && dpkg-shlibdeps -O --warnings=0 -e debian/arch/usr/bin/arch-runc-helper \
    -e debian/arch/usr/bin/archctl -e debian/arch/usr/bin/archd 2> >(grep -v 'binaries to analyze' >&2))
shlibs=${shlibs#shlibs:Depends=}
[[ -n $shlibs ]] || die "dpkg-shlibdeps found no dependencies"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: arch
Version: $version
Architecture: $deb_arch
Maintainer: ARCH developers <arch@localhost>
Installed-Size: $installed_size
Depends: $shlibs, runc, iproute2
Recommends: iptables, logrotate, containerd | docker.io
Section: admin
Priority: optional
Description: checkpoint and restore containers with CRIU (ARCH)
 ARCH sits between a container engine (containerd, Docker) and runc: arch-runc
 checkpoints ARCH-enabled containers with CRIU and restores them when they are
 created again; archd watches for reclaim notices and drains the node; archctl
 is the command line. The package bundles CRIU 4 with its own libraries in
 /usr/lib/arch/criu (Debian 12's CRIU does not work on current kernels).
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +

mkdir -p "$out_dir"
deb=$out_dir/arch_${version}_${deb_arch}.deb
dpkg-deb --root-owner-group -Z"$compression" --build "$root" "$deb" >/dev/null
if [[ ${ARCH_DEB_LINTIAN:-1} == 1 ]] && command -v lintian >/dev/null; then
    lintian --no-tag-display-limit "$deb" >&2 || warn "lintian reported problems (above)"
fi
log "built $deb ($(du -h "$deb" | cut -f1))"
printf '%s\n' "$(readlink -f "$deb")"
