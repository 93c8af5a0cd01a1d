#!/usr/bin/env bash
# Installs the Debian packages the sandbox and tests need, once, before anything runs in parallel
# (apt takes a lock). Go and Rust come with the machine.
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=deps
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_pkgs docker.io docker-compose debootstrap debian-archive-keyring openssh-server openssh-client \
    git openssl curl iproute2 ca-certificates containernetworking-plugins
for tool in go cargo; do
    command -v "$tool" >/dev/null || die "$tool is required and not installed"
done
