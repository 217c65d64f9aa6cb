# lib.sh - sourced by the bench scripts (compare.sh, handover.sh): a work
# directory removed at exit, and the database to measure: $DATABASE_URL, or a
# throwaway PostgreSQL (scripts/pg-throwaway.sh) stopped at exit.
#
#   . "$here/lib.sh"
#   bench_workdir NAME   sets $work (/tmp/dbpool-NAME-XXXXXX, mode 711: servers
#                        and PgBouncer running as another user live below it)
#                        and $pgdir; installs the exit trap
#   bench_database NAME  sets $conninfo and $server_version
#   bench_at_exit CMD    run CMD (a shell word list, eval'd) at exit, before the
#                        throwaway server stops (e.g. stop a PgBouncer)
#
# Expects $repo (the repository root) and a die() function.

bench_exit_cmds=()
bench_started_pg=0

bench_at_exit() {
    bench_exit_cmds+=("$1")
}

bench_cleanup() {
    local c
    for c in "${bench_exit_cmds[@]}"; do
        eval "$c" || true
    done
    if [ "$bench_started_pg" = 1 ]; then
        bash "$repo/scripts/pg-throwaway.sh" stop "$pgdir" || true
    fi
    if [ -n "${work:-}" ]; then
        rm -rf -- "$work"
    fi
}

bench_workdir() {
    work=$(mktemp -d "/tmp/dbpool-$1-XXXXXX")
    chmod 711 "$work"
    pgdir="$work/pg"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM HUP
}

bench_database() {
    if [ -n "${DATABASE_URL:-}" ]; then
        conninfo=$DATABASE_URL
        echo "$1: using DATABASE_URL" >&2
    elif [ -f "$repo/scripts/pg-throwaway.sh" ]; then
        conninfo=$(bash "$repo/scripts/pg-throwaway.sh" start "$pgdir")
        bench_started_pg=1
        echo "$1: throwaway PostgreSQL: $conninfo" >&2
    else
        die "scripts/pg-throwaway.sh is missing and DATABASE_URL is not set"
    fi
    server_version=$(psql "$conninfo" -XAtc "SHOW server_version")
}
