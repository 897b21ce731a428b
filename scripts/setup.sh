#!/usr/bin/env bash
# Install everything vifwire needs on a fresh Debian 12 machine (run as root):
# system packages (kernel tools, Open vSwitch, nftables, libvirt's schema
# validator) and a virtual environment in .venv with vifwire and its pinned
# dependencies. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(iproute2 iputils-ping nftables libnftables1 openvswitch-switch libvirt-clients libxml2-utils python3-venv
      podman runc containernetworking-plugins busybox-static etcd-server etcd-client openssl
      libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 lxd lxd-client)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Installing openvswitch-switch must not start a system OVS: vifwire's tests
    # and sandbox run their own private daemons.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirt's QEMU driver looks up its built-in user before it reads qemu.conf,
# so the user must exist even though the tests run QEMU as root.
id -u libvirt-qemu >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
# Byte-compile the editable sources once, as a non-editable install would:
# with PYTHONDONTWRITEBYTECODE set, every command would otherwise compile
# them again (~80 ms of a one-port plug).
.venv/bin/python -m compileall -q src >/dev/null
.venv/bin/vifwire --version >/dev/null
echo "setup: ready (.venv/bin/vifwire)" >&2
