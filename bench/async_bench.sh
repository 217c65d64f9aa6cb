#!/usr/bin/env bash
# async_bench.sh - SELECT 1 from event loops through the pool
# (dbpool_pg_async.h), against node-postgres' pool on one event loop,
# pgbench -c 8 -j 1 / -j 2 (one / two threads multiplexing 8 connections:
# the same model without a pool) and the blocking API from 16 threads. All
# in one run on one server, the setups interleaved per repetition; the
# median of REPS runs is reported, then the ratios.
#
#   bash bench/async_bench.sh                  start a throwaway PostgreSQL
#   DATABASE_URL=... bash bench/async_bench.sh use that database
#
# Environment: DURATION=5 (s per run), REPS=3, CONNS=8 (pool size, pgbench
# -c), BUILD_DIR=build, NODE_PG_DIR (where npm installs `pg` if node cannot
# find it; default BUILD_DIR/bench/node), BATCH=64 (dbpool_loop_batch for
# the batch* setups: one-call statements sharing a lease in one libpq
# pipeline), BEFORE=path to another build's async_bench (e.g. of main): adds
# before_* setups with it (one loop 16/256, prepared, two loops unbatched and
# batched), interleaved in the same run.
# Needs: pgbench, node (>= 18) with npm `pg` (installed by npm if missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
DURATION=${DURATION:-5}
REPS=${REPS:-3}
CONNS=${CONNS:-8}
BUILD_DIR=${BUILD_DIR:-$repo/build}
NODE_PG_DIR=${NODE_PG_DIR:-$BUILD_DIR/bench/node}
bench=$BUILD_DIR/bench/async_bench

die() { echo "async_bench.sh: $*" >&2; exit 1; }
command -v pgbench >/dev/null || die "pgbench not found (apt-get install postgresql-client)"
command -v node >/dev/null || die "node not found"
if [ ! -x "$bench" ]; then
    cmake -S "$repo" -B "$BUILD_DIR" >/dev/null
    cmake --build "$BUILD_DIR" --target bench_async_bench -j "$(nproc)" >/dev/null
fi
export NODE_PATH=$NODE_PG_DIR/node_modules${NODE_PATH:+:$NODE_PATH}
if ! node -e "require('pg')" 2>/dev/null; then
    echo "async_bench.sh: installing npm pg into $NODE_PG_DIR" >&2
    mkdir -p "$NODE_PG_DIR"
    (cd "$NODE_PG_DIR" && npm install --no-audit --no-fund --silent pg@8 >&2)
fi

work=$(mktemp -d /tmp/dbpool-async-bench-XXXXXX)
chmod 711 "$work"
started=0
cleanup() {
    [ "$started" = 1 ] && bash "$repo/scripts/pg-throwaway.sh" stop "$work/pg" >/dev/null 2>&1 || true
    rm -rf -- "$work"
}
trap cleanup EXIT
if [ -n "${DATABASE_URL:-}" ]; then
    conninfo=$DATABASE_URL
else
    conninfo=$(bash "$repo/scripts/pg-throwaway.sh" start "$work/pg")
    started=1
fi
echo "SELECT 1;" >"$work/select1.sql"
# pgbench takes libpq's conninfo as its dbname argument
pgb() { pgbench -n -f "$work/select1.sql" -c "$CONNS" -j "$1" -T "$DURATION" "$conninfo" 2>&1 |
        sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' | cut -d. -f1; }
ours() { "$bench" "$conninfo" "$@" "$CONNS" "$DURATION" | sed -n 's/^tps=\([0-9]*\) .*/\1/p'; }
nodepg() { node "$here/async_bench_node.js" "$conninfo" "$1" "$CONNS" "$DURATION" |
           sed -n 's/^tps=\([0-9]*\) .*/\1/p'; }

setups=(async16 async256 prep16 prep256 batch16 batch256 node16 node256 pgbench_j1 blocking16
        async2x16 prep2x16 batch2x16 pgbench_j2)
if [ -n "${BEFORE:-}" ]; then
    [ -x "$BEFORE" ] || die "BEFORE=$BEFORE is not executable"
    setups+=(before_async16 before_async256 before_prep16 before_async2x16 before_batch2x16)
fi
before() { "$BEFORE" "$conninfo" "$@" "$CONNS" "$DURATION" | sed -n 's/^tps=\([0-9]*\) .*/\1/p'; }
declare -A runs
for rep in $(seq 1 "$REPS"); do
    for s in "${setups[@]}"; do
        case $s in
        async16) v=$(ours async 16 1) ;;
        async256) v=$(ours async 256 1) ;;
        prep16) v=$(ours async-prepared 16 1) ;;
        prep256) v=$(ours async-prepared 256 1) ;;
        batch16) v=$(ours async-batch 16 1) ;;
        batch256) v=$(ours async-batch 256 1) ;;
        batch2x16) v=$(ours async-batch 16 2) ;;
        before_async16) v=$(before async 16 1) ;;
        before_async256) v=$(before async 256 1) ;;
        before_prep16) v=$(before async-prepared 16 1) ;;
        before_async2x16) v=$(before async 16 2) ;;
        before_batch2x16) v=$(before async-batch 16 2) ;;
        node16) v=$(nodepg 16) ;;
        node256) v=$(nodepg 256) ;;
        pgbench_j1) v=$(pgb 1) ;;
        blocking16) v=$(ours blocking 16 16) ;;
        async2x16) v=$(ours async 16 2) ;;
        prep2x16) v=$(ours async-prepared 16 2) ;;
        pgbench_j2) v=$(pgb 2) ;;
        esac
        [ -n "$v" ] || die "$s produced no number"
        runs[$s]="${runs[$s]:-} $v"
        echo "rep $rep $s: $v tps" >&2
    done
done
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A m
echo "SELECT 1, pool/connections $CONNS, $DURATION s x $REPS runs (median tps); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
for s in "${setups[@]}"; do
    m[$s]=$(median "${runs[$s]}")
    printf '  %-12s %8s   (runs:%s)\n' "$s" "${m[$s]}" "${runs[$s]}"
done
ratio() { awk -v a="$2" -v b="$3" -v t="$4" -v n="$1" \
          'BEGIN {r = a / b; printf "  %-40s %5.2fx  (target >= %sx: %s)\n", n, r, t, (r >= t ? "met" : "MISSED")}'; }
echo "ratios:"
ratio "async 16 clients / node-postgres 16" "${m[async16]}" "${m[node16]}" 2
ratio "async 256 clients / node-postgres 256" "${m[async256]}" "${m[node256]}" 2
ratio "async 16 clients / pgbench -c8 -j1" "${m[async16]}" "${m[pgbench_j1]}" 0.9
ratio "async 256 clients / pgbench -c8 -j1" "${m[async256]}" "${m[pgbench_j1]}" 0.9
ratio "prepared 16 clients / pgbench -c8 -j1" "${m[prep16]}" "${m[pgbench_j1]}" 0.9
ratio "2 loops x 16 clients / pgbench -c8 -j2" "${m[async2x16]}" "${m[pgbench_j2]}" 0.9
ratio "prepared 2 loops / pgbench -c8 -j2" "${m[prep2x16]}" "${m[pgbench_j2]}" 0.9
ratio "async 16 clients / blocking 16 threads" "${m[async16]}" "${m[blocking16]}" 1
ratio "batch 16 clients / node-postgres 16" "${m[batch16]}" "${m[node16]}" 2
ratio "batch 256 clients / node-postgres 256" "${m[batch256]}" "${m[node256]}" 2
ratio "batch 16 clients / pgbench -c8 -j1" "${m[batch16]}" "${m[pgbench_j1]}" 0.9
ratio "batch 256 clients / pgbench -c8 -j1" "${m[batch256]}" "${m[pgbench_j1]}" 0.9
ratio "batch 2 loops x 16 / pgbench -c8 -j2" "${m[batch2x16]}" "${m[pgbench_j2]}" 0.9
if [ -n "${BEFORE:-}" ]; then
    ratio "async 16: after / before" "${m[async16]}" "${m[before_async16]}" 1
    ratio "async 256: after / before" "${m[async256]}" "${m[before_async256]}" 1
    ratio "prepared 16: after / before" "${m[prep16]}" "${m[before_prep16]}" 1
    ratio "2 loops x 16: after / before" "${m[async2x16]}" "${m[before_async2x16]}" 1
    ratio "batch 2 loops x 16: after / before" "${m[batch2x16]}" "${m[before_batch2x16]}" 1
    ratio "before: 2 loops x 16 / pgbench -c8 -j2" "${m[before_async2x16]}" "${m[pgbench_j2]}" 0.9
    ratio "before: batch 2 loops / pgbench -c8 -j2" "${m[before_batch2x16]}" "${m[pgbench_j2]}" 0.9
fi
# per-rep ratios (same rep = same conditions): the spread says how far to trust the medians
echo "per-rep ratios (batch256/node256, batch16/pgbench_j1, batch2x16/pgbench_j2, async2x16/pgbench_j2):"
for i in $(seq 1 "$REPS"); do
    pick() { tr ' ' '\n' <<<"${runs[$1]}" | sed '/^$/d' | sed -n "${i}p"; }
    awk -v a="$(pick batch256)" -v b="$(pick node256)" -v c="$(pick batch16)" -v d="$(pick pgbench_j1)" \
        -v e="$(pick batch2x16)" -v f="$(pick pgbench_j2)" -v g="$(pick async2x16)" -v r="$i" \
        'BEGIN {printf "  rep %d: %.2fx %.2fx %.2fx %.2fx\n", r, a/b, c/d, e/f, g/f}'
done
if [ -n "${BEFORE:-}" ]; then
    echo "per-rep ratios, before (before_batch2x16/pgbench_j2, before_async2x16/pgbench_j2):"
    for i in $(seq 1 "$REPS"); do
        pick() { tr ' ' '\n' <<<"${runs[$1]}" | sed '/^$/d' | sed -n "${i}p"; }
        awk -v e="$(pick before_batch2x16)" -v f="$(pick pgbench_j2)" -v g="$(pick before_async2x16)" \
            -v r="$i" 'BEGIN {printf "  rep %d: %.2fx %.2fx\n", r, e/f, g/f}'
    done
fi
