#!/usr/bin/env bash
# scripts/test-setup.sh — install what the test suite needs on Debian/Ubuntu,
# as root: PostgreSQL 15, gnupg/xz/zstd for the break-glass tests, OpenSSH's
# server for the SFTP tests, MariaDB's server and client (the tests start
# private instances, never the system's), OpenStack Swift (proxy, account,
# container and object servers, the ring builder), memcached and Keystone
# (python3-keystone, run on SQLite by the harness) for the Swift tests, moto
# (an S3-compatible server from PyPI) in /opt/cellar-moto, and the build
# dependencies. Idempotent: apt and pip run
# only for what is missing. The README's test command runs it first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKGS=(
    postgresql-15 postgresql-client-15
    gnupg xz-utils zstd
    build-essential pkg-config libssl-dev liblzma-dev libclang-dev
    python3 python3-venv
    openssh-server openssh-client
    mariadb-server mariadb-client
    swift swift-proxy swift-account swift-container swift-object memcached
    python3-keystone python3-keystonemiddleware
)

missing=()
for p in "${PKGS[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "test-setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
    echo "test-setup: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
}

# The S3-compatible server the tests start: moto, from PyPI, in a venv of
# its own (the harness looks for /opt/cellar-moto/bin/moto_server).
MOTO_VERSION=5.2.5
if ! /opt/cellar-moto/bin/moto_server --help >/dev/null 2>&1; then
    echo "test-setup: installing moto[server]==$MOTO_VERSION into /opt/cellar-moto"
    python3 -m venv /opt/cellar-moto
    /opt/cellar-moto/bin/pip install -q "moto[server]==$MOTO_VERSION"
fi
