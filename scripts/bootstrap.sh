#!/usr/bin/env bash
# Installs the Debian packages the lab's controller and its tests need on this machine.
# The lab's own roles install what each lab host needs; this covers the controller (and CI).
set -euo pipefail
packages=(
  nginx redis-server postgresql prometheus prometheus-node-exporter supervisor wrk
  iproute2 procps chromium fonts-dejavu-core python3-venv openssh-server openssh-client
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: installing ${missing[*]} needs root; run: sudo bash scripts/bootstrap.sh" >&2
    exit 2
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
