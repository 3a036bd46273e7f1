#!/bin/sh
# The node installer (node-installer.yaml): puts the ARCH package, the optional node key and
# node config where the host sees them (/var/lib/arch-installer), then in the host's
# namespaces installs the package, imports the key, runs `archctl install containerd`,
# restarts containerd only if its config changed, and enables archd (the package's unit).
# Idempotent: a restarted pod finds everything in place. Then it sleeps.
set -eu

src=/opt/arch-installer
staging=/host-staging # hostPath /var/lib/arch-installer
deb=
for f in "$src"/arch_*.deb; do
    [ -f "$f" ] && deb=$f
done
[ -n "$deb" ] || {
    echo "arch-installer: no arch_*.deb in $src" >&2
    exit 1
}
umask 077
cp "$deb" "$staging/arch.deb.tmp"
mv "$staging/arch.deb.tmp" "$staging/arch.deb"
if [ -f /etc/arch-installer/key/node.key ]; then
    cp /etc/arch-installer/key/node.key "$staging/node.key"
fi
if [ -f /etc/arch-installer/config/arch.conf ]; then
    cp /etc/arch-installer/config/arch.conf "$staging/arch.conf"
fi

nsenter -t 1 -m -u -i -n -p -- /bin/sh -s <<'HOST'
set -eu
cd /var/lib/arch-installer
DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./arch.deb
if [ -f arch.conf ]; then
    install -m 0644 -o root -g root arch.conf /etc/arch/arch.conf
    rm -f arch.conf
fi
if [ -f node.key ]; then
    archctl key import node.key || echo "arch-installer: key import failed (already there?)" >&2
    rm -f node.key
fi
before=$(sha256sum /etc/containerd/config.toml 2>/dev/null || true)
archctl install containerd
after=$(sha256sum /etc/containerd/config.toml 2>/dev/null || true)
if [ "$before" != "$after" ]; then
    systemctl restart containerd
fi
systemctl enable --now archd.service
HOST

echo "arch-installer: ARCH installed on ${NODE_NAME:-this node}"
exec sleep infinity
