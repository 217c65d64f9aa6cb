#!/usr/bin/env bash
# isolation_stall.sh - before/after numbers for moving host-name lookups off
# the manager thread (commit 82026cd), side by side in one run:
#   1. bench/isolation_stall.c: how late the manager serves a hold_timeout
#      timer and delivers events, and how long dbpool_open + dbpool_close of
#      another pool take, while 1,000 pools are open and one pool's host name
#      takes SLOWDNS_MS to resolve (LD_PRELOAD shim bench/shim/slowdns_shim.c);
#   2. bench/pool_micro.c: the stub checkout + check-in cycle, interleaved
#      (each commit's own pool_micro.c; after 8ae289d its stub driver lives in
#      tests/stub/, so check that the two stubs do the same work before
#      comparing other commits).
#
#   bash bench/isolation_stall.sh            # from the repository root
#
# Environment (defaults):
#   BEFORE=2d6d166 AFTER=HEAD  the two commits (git archive'd into WORK, so
#                              neither needs a worktree and local edits are ignored)
#   WORK=/tmp/dbpool-iso       build and server directory (removed server at exit)
#   POOLS=1000 POOL_MIN=0      the many pools; POOL_MIN=1 gives each a connection
#                              (the script then raises max_connections)
#   SECS=10 HOLD=100           measuring window (s) and the probe's hold_timeout (ms)
#   SLOWDNS_MS=2000            how long one lookup of slow.dbpool.test takes
#   ROUNDS=2                   stall rounds; the order alternates (before first,
#                              then after first, ...)
#   CONTROL=1                  one more run of each build with a 0 ms lookup
#                              (the same pools, no stall): the noise floor
#   MICRO_ROUNDS=3             pool_micro runs per build, interleaved; 0 skips
#   MICRO_ARGS=""              extra pool_micro arguments (e.g. "--threads 1,2,8")
#   CALLGRIND=1                also count instructions per single-thread cycle with
#                              valgrind --tool=callgrind (if installed): load-independent
#   DATABASE_URL               use this server (key=value conninfo, numeric host)
#                              instead of starting a throwaway one
#   NICE=10                    builds, pool_micro and callgrind run under nice -n NICE
#   STALL_NICE=0               the stall runs (mostly asleep: a probe thread polling
#                              every 0.25 ms); under nice 10 on a loaded machine every
#                              wake-up would wait behind other jobs and blur the floor
set -euo pipefail

repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
BEFORE=${BEFORE:-2d6d166}
AFTER=${AFTER:-HEAD}
WORK=${WORK:-/tmp/dbpool-iso}
POOLS=${POOLS:-1000}
POOL_MIN=${POOL_MIN:-0}
SECS=${SECS:-10}
HOLD=${HOLD:-100}
ROUNDS=${ROUNDS:-2}
MICRO_ROUNDS=${MICRO_ROUNDS:-3}
CONTROL=${CONTROL:-1}
CALLGRIND=${CALLGRIND:-1}
MICRO_ARGS=${MICRO_ARGS:-}
NICE=${NICE:-10}
STALL_NICE=${STALL_NICE:-0}
export SLOWDNS_MS=${SLOWDNS_MS:-2000}
export SLOWDNS_HOST=slow.dbpool.test

n() { nice -n "$NICE" "$@"; }

mkdir -p "$WORK"
log="$WORK/log"
: >"$log"

# ---- build ------------------------------------------------------------------
declare -A rev
rev[before]=$(git -C "$repo" rev-parse --verify "$BEFORE^{commit}")
rev[after]=$(git -C "$repo" rev-parse --verify "$AFTER^{commit}")

pq_cflags=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
pq_libs=$(pkg-config --libs libpq 2>/dev/null || echo "-lpq")

# shellcheck disable=SC2086 # pq_cflags and pq_libs are lists of flags
build() { # name
    local name=$1 src="$WORK/src-$1" bld="$WORK/build-$1"
    echo "== build $name (${rev[$name]:0:10})" >&2
    rm -rf "$src" && mkdir -p "$src"
    git -C "$repo" archive "${rev[$name]}" | tar -x -C "$src"
    n cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DDBPOOL_BUILD_EXAMPLES=OFF -DDBPOOL_BUILD_TOOLS=OFF >>"$log" 2>&1
    n cmake --build "$bld" --target dbpool_static -j2 >>"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; exit 1; }
    local lib
    lib=$(find "$bld" -name libdbpool.a | head -n 1)
    # the same stall bench source (this checkout's) for both builds; pool_micro as
    # each commit has it
    n cc -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -I"$src/include" $pq_cflags \
        -o "$WORK/isolation_stall-$name" "$repo/bench/isolation_stall.c" "$lib" $pq_libs \
        -lpthread -ldl -lm
    local stub=()  # later commits keep pool_micro's stub driver in tests/stub/
    if [ -f "$src/tests/stub/stub_driver.c" ]; then
        stub=(-I"$src/tests/stub" "$src/tests/stub/stub_driver.c")
    fi
    n cc -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -I"$src/include" $pq_cflags \
        -o "$WORK/pool_micro-$name" "$src/bench/pool_micro.c" "${stub[@]}" "$lib" $pq_libs \
        -lpthread -lm
}
build before
build after
n cc -O2 -Wall -Wextra -fPIC -shared -o "$WORK/slowdns_shim.so" \
    "$repo/bench/shim/slowdns_shim.c" -ldl

# ---- server -----------------------------------------------------------------
pgdir="$WORK/pg"
started=0
cleanup() {
    if [ "$started" = 1 ]; then
        bash "$repo/scripts/pg-throwaway.sh" stop "$pgdir" || true
    fi
}
trap cleanup EXIT
if [ -z "${DATABASE_URL:-}" ]; then
    bash "$repo/scripts/pg-throwaway.sh" stop "$pgdir" >/dev/null 2>&1 || true
    DATABASE_URL=$(bash "$repo/scripts/pg-throwaway.sh" start "$pgdir")
    started=1
    need=$((POOLS * POOL_MIN + 50))
    have=$(psql "$DATABASE_URL" -XAtc 'show max_connections')
    if [ "$have" -lt "$need" ]; then
        echo "== max_connections $have -> $need (ALTER SYSTEM + restart)" >&2
        psql "$DATABASE_URL" -XAtqc "ALTER SYSTEM SET max_connections = $need" >/dev/null
        # shellcheck disable=SC2012 # the same choice as pg-throwaway.sh: the newest
        bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
        as_pg=()
        [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
        "${as_pg[@]}" "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" \
            -w -t 60 -s restart >>"$log" 2>&1
    fi
fi
export DATABASE_URL
# one socket per pool connection, plus epoll and the server's: more than 1024
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== server: $DATABASE_URL (max_connections $(psql "$DATABASE_URL" -XAtc 'show max_connections'))" >&2

# ---- 1. the stall -------------------------------------------------------------
results="$WORK/stall.txt"
: >"$results"
run_stall() { # name round [lookup ms]
    echo "== stall: $1, round $2" >&2
    SLOWDNS_MS=${3:-$SLOWDNS_MS} LD_PRELOAD="$WORK/slowdns_shim.so" \
        nice -n "$STALL_NICE" "$WORK/isolation_stall-$1" \
        --label "$1" --pools "$POOLS" --pool-min "$POOL_MIN" --seconds "$SECS" --hold "$HOLD" \
        >"$WORK/stall-$1-$2.out" 2>>"$log"
    sed 's/^/    /' "$WORK/stall-$1-$2.out" | grep -v '^    RESULT' >&2
    echo "round=$2 $(grep '^RESULT ' "$WORK/stall-$1-$2.out" | sed 's/^RESULT //')" >>"$results"
}
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="before after"; else order="after before"; fi
    for b in $order; do run_stall "$b" "$r"; done
done
if [ "$CONTROL" = 1 ]; then # the same with a lookup that takes 0 ms: the floor
    for b in before after; do run_stall "$b" control 0; done
fi

echo
echo "## Manager stall with one slow lookup: $POOLS pools (min_size $POOL_MIN), lookup ${SLOWDNS_MS} ms, window ${SECS} s"
echo "before = ${rev[before]:0:10}, after = ${rev[after]:0:10}; times in ms; ratio = before / after"
awk '
function v(r, b, k) { return val[r, b, k] }
{
    delete f
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    r = f["round"]; b = f["label"]
    for (k in f) val[r, b, k] = f[k]
    if (!(r in seen)) { seen[r] = 1; rounds[++nr] = r }
    pools = f["pools"]
}
function row(name, k, r,   x, y) {
    x = v(r, "before", k); y = v(r, "after", k)
    if (y > 0) printf "| %-42s | %10s | %10s | %8.1fx |\n", name, x, y, x / y
    else       printf "| %-42s | %10s | %10s | %9s |\n", name, x, y, "-"
}
END {
    for (ri = 1; ri <= nr; ri++) {
        r = rounds[ri]
        if (r == "control")
            printf "\ncontrol: the same run with a 0 ms lookup (no stall possible; the noise floor)\n\n"
        else
            printf "\nround %d (%s ran first)\n\n", r, (r % 2 == 1) ? "before" : "after"
        printf "| %-42s | %10s | %10s | %9s |\n", "metric", "before", "after", "ratio"
        printf "|%s|%s|%s|%s|\n", "--------------------------------------------", "-----------:", "-----------:", "----------:"
        row("hold_timeout lateness p50", "expiry_p50", r)
        row("hold_timeout lateness p99", "expiry_p99", r)
        row("hold_timeout lateness max", "expiry_max", r)
        row("event delivery latency p99", "event_p99", r)
        row("event delivery latency max", "event_max", r)
        row("open+close of another pool p50", "oc_p50", r)
        row("open+close of another pool p99", "oc_p99", r)
        row("open+close of another pool max", "oc_max", r)
        row("probe checkout wait (reconnect) max", "reconnect_max", r)
        row("close of the slow pool during its lookup", "close_slow_ms", r)
        row("open of the " pools " pools (total)", "open_all_ms", r)
        row("close of the " pools " pools (total)", "close_all_ms", r)
        printf "| %-42s | %10s | %10s | %9s |\n", "samples: expiries / events / open+close",
            v(r, "before", "expiry_n") " / " v(r, "before", "event_n") " / " v(r, "before", "oc_n"),
            v(r, "after", "expiry_n") " / " v(r, "after", "event_n") " / " v(r, "after", "oc_n"), ""
        printf "| %-42s | %10s | %10s | %9s |\n", "samples > 20 ms late: expiries / events",
            v(r, "before", "late_expiry") " / " v(r, "before", "late_event"),
            v(r, "after", "late_expiry") " / " v(r, "after", "late_event"), ""
        printf "| %-42s | %10s | %10s | %9s |\n", "... of these at a lookup start/end (50 ms)",
            v(r, "before", "late_expiry_edge") " / " v(r, "before", "late_event_edge"),
            v(r, "after", "late_expiry_edge") " / " v(r, "after", "late_event_edge"), ""
        printf "| %-42s | %10s | %10s | %9s |\n", "slow lookups finished in the window",
            v(r, "before", "lookups"), v(r, "after", "lookups"), ""
    }
}' "$results"

# ---- 2. the stub cycle -----------------------------------------------------------
if [ "$MICRO_ROUNDS" -gt 0 ]; then
    micro="$WORK/micro.txt"
    : >"$micro"
    for r in $(seq 1 "$MICRO_ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order="before after"; else order="after before"; fi
        for b in $order; do
            echo "== pool_micro: $b, round $r" >&2
            # shellcheck disable=SC2086
            n "$WORK/pool_micro-$b" $MICRO_ARGS >"$WORK/micro-$b-$r.out"
            awk -v b="$b" -v r="$r" '$3 == "|" && $7 == "|" && $1 ~ /^[0-9]+$/ {
                print b, r, $1, $2, $4, $5, $8, $9 }' "$WORK/micro-$b-$r.out" >>"$micro"
        done
    done
    echo
    echo "## Stub checkout + check-in (pool_micro), $MICRO_ROUNDS rounds per build, interleaved"
    echo "median over rounds of each run's median; ns per cycle; after/before > 1 = slower after;"
    echo "d/n = dbpool / naive pool in the same run (cancels the machine's load)"
    echo
    awk '
    function med(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        key = $3 " " $4
        if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
        c = ++cnt[$1, key]
        wall[$1, key, c] = $5; cpu[$1, key, c] = $6; dn[$1, key, c] = $6 / $8
        rounds_cpu[$1, key] = rounds_cpu[$1, key] sprintf("%s%.0f", c > 1 ? "," : "", $6)
    }
    END {
        printf "| threads | size | cpu ns before | cpu ns after | after/before | wall ns before | wall ns after | after/before | d/n before | d/n after | cpu ns per round (before; after) |\n"
        printf "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
        for (i = 1; i <= nk; i++) {
            k = order[i]; split(k, ts, " ")
            for (s = 0; s < 2; s++) {
                b = s ? "after" : "before"; m = cnt[b, k]
                delete x; for (j = 1; j <= m; j++) x[j] = cpu[b, k, j]; C[s] = med(x, m)
                delete x; for (j = 1; j <= m; j++) x[j] = wall[b, k, j]; W[s] = med(x, m)
                delete x; for (j = 1; j <= m; j++) x[j] = dn[b, k, j]; D[s] = med(x, m)
            }
            printf "| %d | %d | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f | %s; %s |\n",
                ts[1], ts[2], C[0], C[1], C[1] / C[0], W[0], W[1], W[1] / W[0], D[0], D[1],
                rounds_cpu["before", k], rounds_cpu["after", k]
        }
    }' "$micro"
fi
if [ "$CALLGRIND" = 1 ] && command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
    echo
    echo "## Stub cycle in instructions (valgrind --tool=callgrind, 1 thread, pool size 1)"
    echo "inclusive instructions of dbpool_checkout + dbpool_checkin per call; independent of load"
    echo
    for b in before after; do
        echo "== callgrind: $b" >&2
        n valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind-$b.out" \
            "$WORK/pool_micro-$b" --threads 1 --sizes 1 --reps 1 --time 2000 --only dbpool \
            >"$WORK/callgrind-$b.txt" 2>>"$log"
    done
    echo "| build | cycles | checkout | checkin | per cycle |"
    echo "|---|---:|---:|---:|---:|"
    for b in before after; do
        callgrind_annotate --inclusive=yes --tree=caller "$WORK/callgrind-$b.out" 2>/dev/null |
            awk -v b="$b" '
            function num(s) { gsub(",", "", s); return s + 0 }
            /^ *[0-9,]+ .*< / { if (match($0, /\([0-9,]+x\)/)) calls = num(substr($0, RSTART + 1, RLENGTH - 3)) }
            /\*  [^ ]*:dbpool_checkout / { out = num($1); nout = calls }
            /\*  [^ ]*:dbpool_checkin / { in_ = num($1); nin = calls }
            END {
                if (nout > 0 && nin > 0)
                    printf "| %s | %d | %.1f | %.1f | %.1f |\n", b, nout, out / nout, in_ / nin,
                        out / nout + in_ / nin
            }'
    done
fi
echo
echo "raw output in $WORK (stall-*.out, micro-*.out, log)" >&2
