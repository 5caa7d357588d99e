#!/usr/bin/env bash
# pg-sandbox.sh — a throwaway PostgreSQL cluster for demos, tests and benchmarks.
#
# Usage:
#   scripts/pg-sandbox.sh start  DIR PORT   create (first time) and start a cluster in DIR
#   scripts/pg-sandbox.sh stop   DIR        stop it (fast shutdown); no-op when not running
#   scripts/pg-sandbox.sh status DIR        exit 0 when running, 3 when not
#   scripts/pg-sandbox.sh destroy DIR       stop it and delete DIR
#
# Or source it and call the functions pg_sandbox_start / pg_sandbox_stop /
# pg_sandbox_status / pg_sandbox_destroy with the same arguments (sourcing
# changes no shell options).
#
# The cluster: data in DIR/data, log in DIR/log, Unix socket in DIR, TCP on
# 127.0.0.1:PORT only, superuser "postgres" with trust authentication,
# UTF8 encoding with the C locale, fsync off. Connect with
#   psql -h 127.0.0.1 -p PORT -U postgres        (or -h DIR for the socket)
#
# `start` is idempotent: when the cluster already runs it does nothing; when
# DIR/data already holds a cluster it is started again, not re-created.
# As root, initdb and pg_ctl run as user postgres (initdb refuses root) and
# DIR is chown'ed to postgres; otherwise they run as the current user.
# Prints nothing but errors.
#
# Environment: PG_BIN (default /usr/lib/postgresql/15/bin, else the newest
# /usr/lib/postgresql/*/bin, else initdb/pg_ctl from PATH).

_pg_sandbox_err() { printf 'pg-sandbox: %s\n' "$*" >&2; }

_pg_sandbox_bin() {
    local d
    if [[ -n "${PG_BIN:-}" ]]; then
        printf '%s\n' "$PG_BIN"
        return 0
    fi
    if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        printf '%s\n' /usr/lib/postgresql/15/bin
        return 0
    fi
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    if [[ -n "$d" && -x "$d/initdb" ]]; then
        printf '%s\n' "$d"
        return 0
    fi
    d=$(command -v initdb 2>/dev/null) || {
        _pg_sandbox_err "initdb not found: install postgresql-15 (apt-get install -y postgresql-15) or set PG_BIN"
        return 1
    }
    dirname "$d"
}

# Run a PostgreSQL server program as the cluster's owner, from inside DIR
# (postgres may not be allowed into the caller's working directory).
_pg_sandbox_as_owner() {
    local dir=$1
    shift
    if [[ $(id -u) -eq 0 ]]; then
        (cd "$dir" && runuser -u postgres -- "$@")
    else
        (cd "$dir" && "$@")
    fi
}

_pg_sandbox_absdir() {
    local dir=$1
    [[ -n "$dir" ]] || { _pg_sandbox_err "missing DIR"; return 1; }
    case "$dir" in
        /*) printf '%s\n' "${dir%/}" ;;
        *) printf '%s/%s\n' "$PWD" "${dir%/}" ;;
    esac
}

pg_sandbox_status() {
    local dir bin
    dir=$(_pg_sandbox_absdir "${1:-}") || return 2
    [[ -f "$dir/data/PG_VERSION" ]] || return 3
    bin=$(_pg_sandbox_bin) || return 2
    _pg_sandbox_as_owner "$dir" "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 || return 3
}

pg_sandbox_start() {
    local dir port bin out
    dir=$(_pg_sandbox_absdir "${1:-}") || return 2
    port=${2:-}
    if [[ ! "$port" =~ ^[0-9]+$ ]]; then
        _pg_sandbox_err "usage: pg-sandbox.sh start DIR PORT (PORT must be a number, got '${port}')"
        return 2
    fi
    if (( ${#dir} > 90 )); then
        _pg_sandbox_err "DIR is too long for a Unix socket path (${#dir} chars, keep it under 90): $dir"
        return 2
    fi
    bin=$(_pg_sandbox_bin) || return 1

    if pg_sandbox_status "$dir"; then
        return 0
    fi

    mkdir -p "$dir" || return 1
    if [[ $(id -u) -eq 0 ]]; then
        if ! id -u postgres >/dev/null 2>&1; then
            _pg_sandbox_err "running as root but there is no 'postgres' user: install postgresql-15 or run as a normal user"
            return 1
        fi
        chown postgres: "$dir" || return 1
        if ! runuser -u postgres -- test -w "$dir"; then
            _pg_sandbox_err "user postgres cannot reach $dir (a parent folder is not searchable by it); pick a DIR under /tmp"
            return 1
        fi
    fi

    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        if [[ -e "$dir/data" ]] && [[ -n "$(ls -A "$dir/data" 2>/dev/null)" ]]; then
            _pg_sandbox_err "$dir/data exists but holds no cluster (a failed initdb?); remove it and retry"
            return 1
        fi
        if ! out=$(_pg_sandbox_as_owner "$dir" "$bin/initdb" -D "$dir/data" -A trust -U postgres \
                    -E UTF8 --no-locale 2>&1); then
            _pg_sandbox_err "initdb failed in $dir/data:"
            printf '%s\n' "$out" >&2
            return 1
        fi
    fi

    if ! out=$(_pg_sandbox_as_owner "$dir" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
                -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start 2>&1); then
        _pg_sandbox_err "could not start PostgreSQL in $dir on port $port:"
        printf '%s\n' "$out" >&2
        if [[ -f "$dir/log" ]]; then
            _pg_sandbox_err "last lines of $dir/log:"
            tail -n 15 "$dir/log" >&2
        fi
        return 1
    fi
}

pg_sandbox_stop() {
    local dir bin out
    dir=$(_pg_sandbox_absdir "${1:-}") || return 2
    pg_sandbox_status "$dir" || return 0
    bin=$(_pg_sandbox_bin) || return 1
    if ! out=$(_pg_sandbox_as_owner "$dir" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop 2>&1); then
        _pg_sandbox_err "could not stop PostgreSQL in $dir:"
        printf '%s\n' "$out" >&2
        return 1
    fi
}

pg_sandbox_destroy() {
    local dir
    dir=$(_pg_sandbox_absdir "${1:-}") || return 2
    pg_sandbox_stop "$dir" || return 1
    if [[ "$dir" == "/" || -z "$dir" ]]; then
        _pg_sandbox_err "refusing to delete '$dir'"
        return 2
    fi
    rm -rf -- "$dir"
}

_pg_sandbox_main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        start) pg_sandbox_start "$@" ;;
        stop) pg_sandbox_stop "$@" ;;
        status) pg_sandbox_status "$@" ;;
        destroy) pg_sandbox_destroy "$@" ;;
        -h|--help|help)
            sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            ;;
        *)
            _pg_sandbox_err "usage: pg-sandbox.sh start DIR PORT | stop DIR | status DIR | destroy DIR"
            return 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -uo pipefail
    _pg_sandbox_main "$@"
    exit $?
fi
