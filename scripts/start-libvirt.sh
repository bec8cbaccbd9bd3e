#!/usr/bin/env bash
# Start virtlogd and libvirtd if they are not running (machines without systemd) and wait for the socket.
set -euo pipefail
SOCK=/var/run/libvirt/libvirt-sock
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
for d in virtlogd libvirtd; do
  if ! pgrep -x "$d" >/dev/null; then
    echo "starting $d"
    $SUDO "$d" -d
  fi
done
for _ in $(seq 1 100); do
  if [ -S "$SOCK" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "libvirtd answers on $SOCK"
    exit 0
  fi
  sleep 0.2
done
echo "libvirtd did not answer on $SOCK within 20 s; see /var/log/libvirt/libvirtd.log" >&2
exit 1
