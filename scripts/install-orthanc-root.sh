#!/usr/bin/env bash
# Installs Orthanc 1.12 (Debian 13's orthanc, orthanc-python, orthanc-postgresql) into a Debian 13 root
# folder, for `orthanc-jobs cluster up --orthanc-root ROOT`: Orthanc then runs from that root through its
# own loader and libraries, beside the system's Orthanc (Debian 12 has 1.10.1). Root or sudo; about a minute.
#   scripts/install-orthanc-root.sh [ROOT]     (default: .cache/orthanc-1.12)
set -euo pipefail
root=${1:-.cache/orthanc-1.12}
suite=${ORTHANC_ROOT_SUITE:-trixie}
mirror=${ORTHANC_ROOT_MIRROR:-http://deb.debian.org/debian}
packages="orthanc orthanc-python orthanc-postgresql"

if [[ -x "$root/usr/sbin/Orthanc" && -e "$root/.orthanc-jobs-complete" ]]; then
    exit 0
fi
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends debootstrap
fi

# Built aside, then moved in place: an interrupted run leaves no half-made root behind.
mkdir -p "$(dirname "$root")"
building="$root.building"
$sudo rm -rf "$building"
echo "installing a Debian $suite root with $packages in $root (about a minute)"
$sudo debootstrap --variant=minbase "$suite" "$building" "$mirror" >"$building.log" 2>&1 || {
    tail -20 "$building.log" >&2
    echo "debootstrap of Debian $suite failed (log: $building.log)" >&2
    exit 1
}
# No service starts inside the root; apt needs /proc.
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$building/usr/sbin/policy-rc.d" >/dev/null
$sudo chmod +x "$building/usr/sbin/policy-rc.d"
$sudo cp /etc/resolv.conf "$building/etc/resolv.conf"
$sudo mount --bind /proc "$building/proc"
trap '$sudo umount "$building/proc" 2>/dev/null || true' EXIT
$sudo chroot "$building" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $packages" >>"$building.log" 2>&1 || {
    tail -20 "$building.log" >&2
    echo "installing $packages in the Debian $suite root failed (log: $building.log)" >&2
    exit 1
}
$sudo umount "$building/proc"
trap - EXIT
$sudo touch "$building/.orthanc-jobs-complete"
$sudo rm -rf "$root"
$sudo mv "$building" "$root"
$sudo rm -f "$building.log"
echo "Orthanc $("$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path \
    "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" "$root/usr/sbin/Orthanc" --version | head -1 |
    awk '{print $2}') ready in $root"
