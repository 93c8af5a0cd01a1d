#!/usr/bin/env bash
# Installs the Debian packages the sandbox and tests need, once, before anything runs in parallel
# (apt takes a lock). Go and Rust come with the machine.
set -euo pipefail
packages=(docker.io docker-compose debootstrap openssh-server openssh-client git openssl curl iproute2 ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[deps] installing ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in go cargo; do
  command -v "$tool" >/dev/null || { echo "[deps] $tool is required and not installed" >&2; exit 1; }
done
