#!/usr/bin/env bash
# pg-throwaway.sh - a throwaway PostgreSQL for `make demo` and manual tries.
#   pg-throwaway.sh start DIR   initdb in DIR, start on 127.0.0.1 and a free port,
#                               print the conninfo on stdout (nothing else)
#   pg-throwaway.sh stop DIR    stop the server and remove DIR
# Runs the server as the `postgres` user when started as root. Trust auth on the
# unix socket (in DIR) and on 127.0.0.1. Logs in DIR/server.log.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$(realpath -m -- "$2")
marker="$dir/.dbpool-throwaway"

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
    best=-1
    for d in /usr/lib/postgresql/*/bin; do
        v=${d#/usr/lib/postgresql/}; v=${v%/bin}
        if [[ $v =~ ^[0-9]+$ ]] && [ -x "$d/initdb" ] && [ "$v" -gt "$best" ]; then
            best=$v bindir=$d
        fi
    done
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/pg_ctl" ]; then
    echo "pg-throwaway: no PostgreSQL server found (install 'postgresql' or set PG_BINDIR)" >&2
    exit 1
fi

# Run a command as the server's user (postgres when we are root), bounded in time.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null; then
            timeout 60 runuser -u postgres -- "$@"
        else
            timeout 60 su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        timeout 60 "$@"
    fi
}

# A port nobody listens on: random in 20000..59999, not in /proc/net/tcp* LISTEN.
pick_port() {
    local port listening
    local hex
    listening=$(awk 'FNR > 1 && $4 == "0A" { n = split($2, a, ":"); print a[n] }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r hex; do echo $((16#$hex)); done)
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! grep -qx "$port" <<<"$listening"; then
            echo "$port"
            return
        fi
    done
    echo $((20000 + RANDOM % 40000))
}

start() {
    if [ -e "$dir/data/PG_VERSION" ]; then
        echo "pg-throwaway: $dir already has a data dir; stop it first" >&2
        exit 1
    fi
    mkdir -p "$dir"
    touch "$marker"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$dir"
    fi
    chmod 700 "$dir"
    as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1 || {
        echo "pg-throwaway: initdb failed; see $dir/initdb.log" >&2
        tail -n 20 "$dir/initdb.log" >&2
        exit 1
    }
    cat >"$dir/data/pg_hba.conf" <<HBA
local all all              trust
host  all all 127.0.0.1/32 trust
HBA
    cat >>"$dir/data/postgresql.conf" <<CONF

# pg-throwaway
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
include_if_exists = 'port.conf'
CONF
    local port tries
    for tries in 1 2 3 4 5; do
        port=$(pick_port)
        echo "port = $port" >"$dir/data/port.conf"
        if [ "$(id -u)" -eq 0 ]; then
            chown postgres:postgres "$dir/data/pg_hba.conf" "$dir/data/port.conf"
        fi
        if as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -s start \
            </dev/null >>"$dir/pg_ctl.log" 2>&1; then
            echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
            return 0
        fi
        echo "pg-throwaway: start on port $port failed (attempt $tries of 5)" >&2
    done
    tail -n 20 "$dir/server.log" >&2 || true
    exit 1
}

stop() {
    if [ ! -d "$dir" ]; then
        return 0
    fi
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 -s stop </dev/null >&2 ||
            as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 -s stop </dev/null >&2 ||
            true
    fi
    # Only remove a dir this script made.
    if [ -e "$marker" ]; then
        rm -rf -- "$dir"
    else
        echo "pg-throwaway: $dir was not made by pg-throwaway.sh; not removing it" >&2
    fi
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
