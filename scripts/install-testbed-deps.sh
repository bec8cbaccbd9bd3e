#!/usr/bin/env bash
# Install what the live testbed needs on a fresh Debian/Ubuntu CI machine (idempotent).
# Usage: scripts/install-testbed-deps.sh [VENV]   (default VENV: .venv)
# Why each package: qemu-system-x86 runs the guest (TCG when KVM is unusable); libvirt-daemon-system and
# libvirt-clients manage it; libvirt-dev + pkg-config build libvirt-python; linux-image-amd64 provides the
# guest kernel and virtio modules; busybox-static the guest userland; gcc + libc6-dev build the static
# guest service; iptables lets the fault tests block the probe's port.
set -euo pipefail
VENV=${1:-.venv}
PKGS=(qemu-system-x86 libvirt-daemon-system libvirt-clients libvirt-dev pkg-config linux-image-amd64
      busybox-static gcc libc6-dev procps iptables)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "apt packages already installed"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "no Python venv at $VENV (pass its path as the first argument)" >&2
  exit 1
fi
if "$VENV/bin/python" -c "import libvirt" 2>/dev/null; then
  echo "libvirt-python already in $VENV"
elif [ -x "$VENV/bin/uv" ]; then
  EXTRA=()
  [ -d /opt/wheels ] && EXTRA+=(--find-links /opt/wheels)
  [ -f /etc/xdg/pip/constraints.txt ] && EXTRA+=(-c /etc/xdg/pip/constraints.txt)
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" "${EXTRA[@]}" libvirt-python
else
  "$VENV/bin/python" -m pip install libvirt-python
fi
