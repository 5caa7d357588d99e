#!/usr/bin/env bash
# install.sh — install cellar and the system packages it needs on Debian/Ubuntu.
#
# Usage (as root, from the repository):
#   ./install.sh                 packages + cargo build --release --locked + install
#   ./install.sh --no-build      packages only
#   ./install.sh --with-server   also install the PostgreSQL server (for scripts/demo.sh)
#   PREFIX=/opt/cellar ./install.sh     install to $PREFIX/bin/cellar (default /usr/local)
#
# Idempotent: packages already installed are not touched (apt-get is skipped
# entirely when nothing is missing), and the binary is only copied when it
# changed. Building needs a Rust toolchain (cargo) on PATH.
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
BUILD=1
WITH_SERVER=0

usage() { sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

for arg in "$@"; do
    case "$arg" in
        --no-build) BUILD=0 ;;
        --with-server) WITH_SERVER=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Runtime: pg_dump/pg_restore/psql/pg_dumpall, gpg for break-glass restores,
# xz and zstd for break-glass decompression, CA certificates for S3 over TLS.
RUNTIME_PKGS=(postgresql-client gnupg xz-utils zstd ca-certificates)
# Build: C toolchain, OpenSSL and liblzma headers, libclang for bindgen.
BUILD_PKGS=(build-essential pkg-config libssl-dev liblzma-dev libclang-dev clang)
PKGS=("${RUNTIME_PKGS[@]}" "${BUILD_PKGS[@]}")
if [[ $WITH_SERVER -eq 1 ]]; then
    PKGS+=(postgresql)
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

say() { printf 'install.sh: %s\n' "$*"; }

# --- system packages -------------------------------------------------------
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    say "this is not a Debian/Ubuntu system (no dpkg/apt-get)."
    say "install these yourself: pg_dump/pg_restore/psql (matching or newer than your server), gpg, xz, zstd;"
    say "to build: a C compiler, pkg-config, OpenSSL and liblzma headers, libclang."
    exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
    is_installed "$p" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    say "system packages: all ${#PKGS[@]} already installed (${PKGS[*]})"
else
    if [[ $(id -u) -ne 0 ]]; then
        say "missing packages: ${missing[*]}"
        say "run as root (sudo ./install.sh) or install them with: apt-get install -y ${missing[*]}"
        exit 1
    fi
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    say "system packages: installed ${missing[*]}"
fi

pg_dump_version=$(pg_dump --version 2>/dev/null || true)
if [[ -n "$pg_dump_version" ]]; then
    say "pg_dump: $pg_dump_version (it must be as new as the servers you back up)"
fi

# --- build and install cellar ----------------------------------------------
if [[ $BUILD -eq 0 ]]; then
    say "--no-build: skipping cargo build and the binary install"
    exit 0
fi

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'EOF'
install.sh: cargo (the Rust toolchain) is not on PATH, so cellar cannot be built.
Install it with rustup, then run ./install.sh again:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"

(or run ./install.sh --no-build to install only the system packages)
EOF
    exit 1
fi

say "building: cargo build --release --locked ($(cargo --version))"
(cd "$ROOT" && cargo build --release --locked)

src="$ROOT/target/release/cellar"
dest="$PREFIX/bin/cellar"
if [[ ! -x "$src" ]]; then
    say "build finished but $src is missing" >&2
    exit 1
fi
install -d -m 0755 "$PREFIX/bin"
if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
    say "$dest is already up to date"
else
    install -m 0755 "$src" "$dest"
    say "installed $dest"
fi
"$dest" --version 2>/dev/null | sed 's/^/install.sh: /' || true

# --- completions, man page, service examples, logrotate ------------------
# Each file is (re)generated from the installed binary, so it matches it.
put() { # put DEST MODE: write stdin to DEST when it differs
    local tmp
    tmp=$(mktemp)
    cat > "$tmp"
    if [[ -f "$1" ]] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        return 0
    fi
    install -D -m "$2" "$tmp" "$1"
    rm -f "$tmp"
    say "installed $1"
}
"$dest" completions bash | put /usr/share/bash-completion/completions/cellar 0644
"$dest" completions zsh | put /usr/local/share/zsh/site-functions/_cellar 0644
"$dest" completions fish | put /usr/share/fish/vendor_completions.d/cellar.fish 0644
"$dest" man | put "$PREFIX/share/man/man1/cellar.1" 0644
# Examples: installed once, never over a file the admin may have edited.
for unit in cellar.service cellar.timer cellar-daemon.service; do
    if [[ -d /etc/systemd/system && ! -e /etc/systemd/system/$unit ]]; then
        install -m 0644 "$ROOT/packaging/$unit" "/etc/systemd/system/$unit"
        say "installed /etc/systemd/system/$unit (not enabled)"
    fi
done
if [[ -d /etc/logrotate.d && ! -e /etc/logrotate.d/cellar ]]; then
    install -m 0644 "$ROOT/packaging/logrotate.conf" /etc/logrotate.d/cellar
    say "installed /etc/logrotate.d/cellar"
fi
say "scheduling: either crontab.example, or: systemctl enable --now cellar.timer (or cellar-daemon.service)"
say "done; next: try scripts/demo.sh"
