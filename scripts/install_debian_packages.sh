#!/usr/bin/env bash
# Installs the Debian packages given that are not installed yet (apt-get, with sudo when not
# root), for setup.sh and fuzz.sh. Usage: install_debian_packages.sh LABEL PACKAGE...
set -euo pipefail
label=$1
shift
missing=()
for package in "$@"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "$label: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
