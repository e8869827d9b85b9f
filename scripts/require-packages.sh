#!/usr/bin/env bash
# Installs the Debian packages named on the command line where they are missing
# (apt-get install -y; as root, or through sudo).  The real servers the fleet and its
# tests run (redis-server, haproxy, nginx) and promtool (package prometheus, for the
# monitoring files) come from here: `make test`, `make fleet` and CI call it.  Where
# nothing can be installed (no root, no apt), it says why and exits 1; the tests that
# need the package then report it (and fail under CI=true).
#
# Usage: scripts/require-packages.sh PACKAGE...
set -euo pipefail

need=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "require-packages: ${need[*]} missing and this machine has no apt-get" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
        echo "require-packages: ${need[*]} missing, and installing needs root" >&2
        exit 1
    fi
    SUDO=(sudo -n)
fi
echo "require-packages: installing ${need[*]}" >&2
# Packaged servers must not start themselves: the project starts its own, on free
# loopback ports (policy-rc.d refuses every service start during the install).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod +x "$policy"
    made_policy=1
fi
trap '[ $made_policy -eq 1 ] && "${SUDO[@]}" rm -f "$policy"' EXIT
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
