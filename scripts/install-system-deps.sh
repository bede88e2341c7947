#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs, only those missing (Debian/Ubuntu, root or sudo).
set -euo pipefail
# chromium: the browser of the dashboard's end-to-end tests (driven by Playwright, which downloads none);
# docker-compose: checks deploy/docker-compose.yml offline (`docker-compose config`), no engine needed;
# wrk: the lean load generator of the flood test (tests/e2e/test_flood.py); nodejs: runs the unit tests of
# the dashboard's rules (tests/unit/ui); iproute2: `ip`, which brings up the loopback of the network
# namespace the query/retrieve tests run in (tests/e2e/test_own_network.py); prometheus: its promtool checks
# and tests the alerting rules in deploy/prometheus (tests/unit/test_prometheus_rules.py).
packages=(orthanc orthanc-python orthanc-postgresql nginx-light postgresql chromium docker-compose wrk nodejs iproute2
    prometheus)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The packages try to start system services; where that is refused (containers, sandboxes) it is harmless.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" || {
    echo "apt-get failed; install these yourself: ${missing[*]}" >&2
    exit 1
}
# Debian starts Orthanc and PostgreSQL as system services where it can; the local cluster runs its own.
for service in orthanc postgresql; do
    $sudo service "$service" stop >/dev/null 2>&1 || true
done
# Only promtool is needed from prometheus: a Prometheus this script installed neither runs nor starts at boot
# (update-rc.d disables the systemd unit too, where systemd runs). One installed before is left alone.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    $sudo service prometheus stop >/dev/null 2>&1 || true
    $sudo update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
