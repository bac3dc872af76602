#!/usr/bin/env bash
# Installs the loader's build dependencies from Debian/Ubuntu packages. Idempotent: does
# nothing when everything is already installed.
set -euo pipefail

packages=(cmake g++ make pkg-config nlohmann-json3-dev libssl-dev libpng-dev python3)
# libjpeg-turbo's development package is named differently on Debian and Ubuntu.
if apt-cache show libjpeg62-turbo-dev >/dev/null 2>&1; then
  packages+=(libjpeg62-turbo-dev)
else
  packages+=(libjpeg-turbo8-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: installed ${missing[*]}"
