#!/usr/bin/env bash
# compare.sh - every benchmark of the pool against its baselines, each
# measured in one run on one server, printing the ratios (`make bench`):
#
#   select1   SELECT 1 throughput: dbpool bench (through the pool) vs dbpool
#             bench --direct (one libpq connection per client, no pool) vs
#             pgbench through PgBouncer (transaction mode), 16 clients on 8
#             server connections
#   handover  strict vs bounded vs unfair hand-over (bench/handover.sh)
#   recovery  outage drills (dbpool drill, refuse and black-hole): first
#             success after the return, connect attempts while down, log lines
#   micro     the stub-driver checkout + check-in cycle against a naive mutex
#             pool in the same process (bench/pool_micro.c; no database)
#   async     (opt-in, needs node + npm pg) SELECT 1 from event loops through
#             the pool vs node-postgres, pgbench -c 8 -j 1/-j 2 and the
#             blocking API (bench/async_bench.sh)
#   registry  the registry at the connect-rate limit (bench/registry_bench.c)
#             vs pgbench -C; uniform and Zipf tenant mixes; open connections
#             vs live backends over time; cold tenant with 10,000 idle tenants
#
#   bash bench/compare.sh                 start a throwaway PostgreSQL, run, stop it
#   DATABASE_URL=... bash bench/compare.sh   use that database instead
#   SUITES="handover recovery" bash bench/compare.sh   only those
#
# Environment (all optional):
#   SUITES="select1 handover recovery micro registry"
#   DURATION=15      seconds per run            REPS=3    runs per setup (median reported)
#   CLIENTS=16       client threads / pgbench clients
#   CONNS=8          server connections (pool size, PgBouncer default_pool_size)
#   PGBENCH_JOBS=2   pgbench -j (worker threads)
#   DBPOOL=path      the dbpool CLI (default: build/bin/dbpool, built if missing)
#   BUILD_DIR=dir    where to build it (default: build)
#   MAX_CONNECTING=N the registry suite's second Zipf run (default: nproc, the local server's CPUs)
#   PGPASSWORD       password, if DATABASE_URL needs one (PgBouncer gets it too)
#
# Needs: pgbench and pgbouncer (Debian packages postgresql-client, pgbouncer),
# psql. PgBouncer runs as an unprivileged user (`postgres` when run as root).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
DURATION=${DURATION:-15}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-16}
CONNS=${CONNS:-8}
PGBENCH_JOBS=${PGBENCH_JOBS:-2}
BUILD_DIR=${BUILD_DIR:-$repo/build}
DBPOOL=${DBPOOL:-$BUILD_DIR/bin/dbpool}
SUITES=${SUITES:-select1 handover recovery micro registry}
want() { [[ " $SUITES " == *" $1 "* ]]; }

die() { echo "compare.sh: $*" >&2; exit 1; }
for tool in pgbench pgbouncer psql; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install postgresql-client pgbouncer)"
done
if [ ! -x "$DBPOOL" ]; then
    echo "compare.sh: building the dbpool CLI in $BUILD_DIR" >&2
    cmake -S "$repo" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target dbpool_cli >/dev/null
fi
if want registry && [ ! -x "$BUILD_DIR/bench/registry_bench" ]; then
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target bench_registry_bench >/dev/null
fi
if want micro && [ ! -x "$BUILD_DIR/bench/pool_micro" ]; then
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target bench_pool_micro >/dev/null
fi
[ -x "$DBPOOL" ] || die "no dbpool CLI at $DBPOOL"

. "$here/lib.sh"
bench_workdir compare
bouncer_pid=""
bench_at_exit 'stop_bouncer'
stop_bouncer() {
    if [ -n "$bouncer_pid" ]; then
        kill "$bouncer_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$bouncer_pid" 2>/dev/null || break; sleep 0.1; done
    fi
}

# ---- the database ----------------------------------------------------------
bench_database compare.sh

# Where the server is, as PgBouncer must reach it (TCP if we came by TCP).
IFS='|' read -r db_user db_name db_host db_port sock_dirs < <(
    psql "$conninfo" -XAtc "SELECT current_user, current_database(),
        coalesce(host(inet_server_addr()), ''), current_setting('port'),
        current_setting('unix_socket_directories')" -F '|')
if [ -z "$db_host" ]; then
    db_host=${sock_dirs%%,*}
fi
max_conn=$(psql "$conninfo" -XAtc "SHOW max_connections")
[ "$max_conn" -ge $((CLIENTS + CONNS + 5)) ] ||
    die "max_connections=$max_conn is too low for $CLIENTS direct clients"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

select1_suite() {
# ---- PgBouncer (transaction mode), as an unprivileged user ------------------
pick_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port"
}
bport=$(pick_port)
bdir="$work/bouncer"
mkdir -p "$bdir"
printf '"%s" "%s"\n' "$db_user" "${PGPASSWORD:-}" >"$bdir/userlist.txt"
cat >"$bdir/pgbouncer.ini" <<INI
[databases]
bench = host=$db_host port=$db_port dbname=$db_name user=$db_user

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $bdir/userlist.txt
pool_mode = transaction
default_pool_size = $CONNS
min_pool_size = $CONNS
max_client_conn = $((CLIENTS * 4 + 20))
logfile = $bdir/pgbouncer.log
pidfile = $bdir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
stats_period = 3600
INI
run_as=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "no unprivileged 'postgres' user to run PgBouncer as"
    chown -R postgres: "$bdir"
    run_as=(runuser -u postgres --)
fi
"${run_as[@]}" pgbouncer -d -q "$bdir/pgbouncer.ini" || die "pgbouncer did not start; see $bdir/pgbouncer.log"
for _ in $(seq 1 100); do
    [ -s "$bdir/pgbouncer.pid" ] && break
    sleep 0.05
done
bouncer_pid=$(cat "$bdir/pgbouncer.pid")
bouncer_ci="host=127.0.0.1 port=$bport dbname=bench user=$db_user"
for _ in $(seq 1 100); do
    psql "$bouncer_ci" -XAtc "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
done
psql "$bouncer_ci" -XAtc "SELECT 1" >/dev/null || die "cannot query through PgBouncer"

# ---- runs ---------------------------------------------------------------------
dbpool_tps() { # args: bench options...
    "$DBPOOL" bench -T "$DURATION" -P 0 --json "$@" "$conninfo" |
        sed -n 's/^  "tps": \([0-9.]*\),*$/\1/p'
}
pgbench_tps() { # args: conninfo clients
    pgbench -n -M simple -f "$work/select1.sql" -c "$2" -j "$PGBENCH_JOBS" -T "$DURATION" "$1" \
        2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

names=(pool pool_same direct direct_all bouncer pgbench_direct)
declare -A label=(
    [pool]="dbpool bench -c $CLIENTS -p $CONNS          (pool, $CONNS server conns)"
    [pool_same]="dbpool bench -c $CONNS -p $CONNS           (pool, no queueing)"
    [direct]="dbpool bench --direct -c $CONNS        ($CONNS server conns)"
    [direct_all]="dbpool bench --direct -c $CLIENTS       ($CLIENTS server conns)"
    [bouncer]="pgbench -c $CLIENTS -j $PGBENCH_JOBS via PgBouncer ($CONNS server conns)"
    [pgbench_direct]="pgbench -c $CONNS -j $PGBENCH_JOBS direct        ($CONNS server conns)"
)
declare -A cmd=(
    [pool]="$DBPOOL bench -w select1 -c $CLIENTS -p $CONNS -T $DURATION \"\$DB\""
    [pool_same]="$DBPOOL bench -w select1 -c $CONNS -p $CONNS -T $DURATION \"\$DB\""
    [direct]="$DBPOOL bench -w select1 --direct -c $CONNS -T $DURATION \"\$DB\""
    [direct_all]="$DBPOOL bench -w select1 --direct -c $CLIENTS -T $DURATION \"\$DB\""
    [bouncer]="pgbench -n -M simple -f select1.sql -c $CLIENTS -j $PGBENCH_JOBS -T $DURATION \"\$BOUNCER\""
    [pgbench_direct]="pgbench -n -M simple -f select1.sql -c $CONNS -j $PGBENCH_JOBS -T $DURATION \"\$DB\""
)
declare -A results round_tps
run() {
    case $1 in
    pool) dbpool_tps -w select1 -c "$CLIENTS" -p "$CONNS" ;;
    pool_same) dbpool_tps -w select1 -c "$CONNS" -p "$CONNS" ;;
    direct) dbpool_tps -w select1 --direct -c "$CONNS" ;;
    direct_all) dbpool_tps -w select1 --direct -c "$CLIENTS" ;;
    bouncer) pgbench_tps "$bouncer_ci" "$CLIENTS" ;;
    pgbench_direct) pgbench_tps "$conninfo" "$CONNS" ;;
    esac
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "compare.sh: $REPS rounds x ${#names[@]} setups x ${DURATION}s (setups alternate in each round)" >&2
for rep in $(seq 1 "$REPS"); do
    # rotate the order so no setup always runs first (warm caches) or last
    for i in $(seq 0 $((${#names[@]} - 1))); do
        n=${names[$(((i + rep - 1) % ${#names[@]}))]}
        tps=$(run "$n")
        [ -n "$tps" ] || die "run '$n' produced no result"
        results[$n]="${results[$n]:-} $tps"
        round_tps[$n,$rep]=$tps
        printf '  round %d  %-15s %10.1f tps\n' "$rep" "$n" "$tps" >&2
    done
done

declare -A med
for n in "${names[@]}"; do
    med[$n]=$(echo "${results[$n]}" | median)
done
# Median over rounds of the ratio within each round: runs of one round are
# close in time, so this cancels slow changes in other load on the machine.
paired() {
    for rep in $(seq 1 "$REPS"); do
        ratio "${round_tps[$1,$rep]}" "${round_tps[$2,$rep]}"
        echo
    done | median | xargs printf '%.2f'
}

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
load=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "## SELECT 1: dbpool vs --direct vs PgBouncer + pgbench"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) CPUs, $cpu; load average (1/5/15 min) at start: $load_start, at the end: $load"
echo "- PostgreSQL $server_version, $(pgbouncer --version | head -n 1), $(pgbench --version)"
echo "- $REPS rounds of ${DURATION}s per setup, setups interleaved; median tps shown, all rounds in brackets"
echo
echo "| setup | median tps | rounds |"
echo "|---|---:|---|"
for n in "${names[@]}"; do
    printf '| %s | %.0f | %s |\n' "${label[$n]}" "${med[$n]}" "$(echo "${results[$n]}" | xargs printf '%.0f ' | sed 's/ $//')"
done
echo
echo "| ratio | of medians | median of per-round ratios | target |"
echo "|---|---:|---:|---:|"
echo "| pool ($CLIENTS clients, $CONNS conns) / direct ($CONNS conns) | $(ratio "${med[pool]}" "${med[direct]}") | $(paired pool direct) | >= 0.95 |"
echo "| pool ($CONNS clients, $CONNS conns) / direct ($CONNS conns) | $(ratio "${med[pool_same]}" "${med[direct]}") | $(paired pool_same direct) | >= 0.95 |"
echo "| pool ($CLIENTS clients, $CONNS conns) / PgBouncer + pgbench | $(ratio "${med[pool]}" "${med[bouncer]}") | $(paired pool bouncer) | >= 1.8 |"
echo "| pool ($CLIENTS clients, $CONNS conns) / direct ($CLIENTS conns) | $(ratio "${med[pool]}" "${med[direct_all]}") | $(paired pool direct_all) | |"
echo "| pgbench direct / dbpool bench --direct ($CONNS conns) | $(ratio "${med[pgbench_direct]}" "${med[direct]}") | $(paired pgbench_direct direct) | (client efficiency) |"
echo
echo "Commands (\$DB = the PostgreSQL conninfo, \$BOUNCER = PgBouncer's; --json -P 0 added"
echo "by the script to read the result):"
echo
echo '```'
for n in "${names[@]}"; do
    echo "${cmd[$n]}"
done
echo '```'
}

# ---- the other suites ----------------------------------------------------------
recovery_suite() {
    echo
    echo "## Recovery after an outage (dbpool drill, pool of 4, 8 clients, 1000 req/s)"
    echo
    echo "| mode | first success after the return | 90% throughput after | connect attempts/s while down | pool log lines | failing checkouts p99 |"
    echo "|---|---:|---:|---:|---:|---:|"
    local mode
    for mode in refuse blackhole; do
        (cd "$work" && "$DBPOOL" drill -m "$mode" -B 2s -O 5s -A 3s --json "$conninfo" >"$work/drill.json" 2>"$work/drill.err") ||
            die "dbpool drill -m $mode failed: $(tail -n 3 "$work/drill.err")"
        jq -r --arg mode "$mode" --argjson logs "$(grep -c '^  \[pool' "$work/drill.err" || true)" '
            .outage_start_s as $s | .outage_end_s as $e | ($e - $s) as $len |
            ([.events[] | select(.type == "connect_failed" and .t >= $s and .t < $e)] | length) as $att |
            "| \($mode) | \(((.first_ok_after_s - .outage_end_s) * 1000) | floor) ms | \(((.full_tps_s - .outage_end_s) * 1000) | floor) ms | \($att / $len * 10 | floor / 10) | \($logs) | \(.fail_ms.p99 * 1000 | floor) us |"
        ' "$work/drill.json"
    done
    echo
    echo "Targets: first success <= 150 ms, 90% throughput <= 500 ms, <= 10 attempts/s, <= 3 log lines per outage, p99 < 1 ms."
    echo "Command: \`dbpool drill -m refuse|blackhole -B 2s -O 5s -A 3s --json \$DB\` (attempts = connect_failed events"
    echo "inside the outage; full_tps_s is the drill's 90%-of-before mark; the drill's time grid is 250 ms)."
}

registry_suite() {
    local rb="$BUILD_DIR/bench/registry_bench" secs=$DURATION tmpl="$conninfo dbname=%s"
    local mconn=${MAX_CONNECTING:-$(nproc)}
    echo
    echo "## Registry at the connect-rate limit (issue 12 part 3; 200 tenant databases)"
    echo
    # pgbench -C: a new connection per transaction, the server's connect rate;
    # 32 clients on 2 threads (blocking connects, one per thread at a time)
    # and on 32 (one per client), before and after the registry's runs (drift
    # shows as a difference); the best of them is the baseline
    pgbench_c() { # threads
        pgbench -n -C -M simple -f "$work/select1.sql" -c 32 -j "$1" -T "$secs" "$conninfo" 2>/dev/null >"$work/pgc.txt"
        sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$work/pgc.txt"
    }
    local pgc1 pgc2 pgc3 pgc4 pgc conn_ms conn_ms32
    pgc1=$(pgbench_c 2)
    conn_ms=$(sed -n 's/^average connection time = \([0-9.]*\) ms.*/\1/p' "$work/pgc.txt")
    pgc3=$(pgbench_c 32)
    conn_ms32=$(sed -n 's/^average connection time = \([0-9.]*\) ms.*/\1/p' "$work/pgc.txt")
    # uniform mix, cap 20, 32 threads: the registry's open count vs live
    # backends every 100 ms (the bench samples both)
    "$rb" --parts c --dbs 200 --cap 20 --threads 32 --seconds "$secs" --zipf 0 --no-baseline \
        --series 100 "$tmpl" >"$work/rb_uniform.txt" 2>&1 ||
        die "registry_bench (uniform) failed: $(tail -n 3 "$work/rb_uniform.txt")"
    # the Zipf mix with the bench's own defaults (cap 50, 16 threads): a hot set that fits
    "$rb" --parts c --dbs 200 --cap 50 --threads 16 --seconds "$secs" --zipf 1.1 --no-baseline "$tmpl" \
        >"$work/rb_zipf.txt" 2>&1 || die "registry_bench (zipf) failed"
    # the same with connects in flight limited to the (local) server's CPUs
    "$rb" --parts c --dbs 200 --cap 50 --threads 16 --seconds "$secs" --zipf 1.1 \
        --max-connecting "$mconn" --no-baseline "$tmpl" >"$work/rb_zipf_mc.txt" 2>&1 ||
        die "registry_bench (zipf, --max-connecting) failed"
    pgc2=$(pgbench_c 2)
    pgc4=$(pgbench_c 32)
    pgc=$(echo "$pgc1 $pgc2 $pgc3 $pgc4" | tr ' ' '\n' | sort -g | tail -n 1)
    "$rb" --parts ab --tenants 10000 --cold 10 "$tmpl" >"$work/rb_cold.txt" 2>&1 || die "registry_bench (cold) failed"
    local uni zipf zipf_mc evs
    uni=$(sed -n 's/^ *\([0-9.]*\) queries\/s.*/\1/p' "$work/rb_uniform.txt" | head -n 1)
    zipf=$(sed -n 's/^ *\([0-9.]*\) queries\/s.*/\1/p' "$work/rb_zipf.txt" | head -n 1)
    zipf_mc=$(sed -n 's/^ *\([0-9.]*\) queries\/s.*/\1/p' "$work/rb_zipf_mc.txt" | head -n 1)
    evs=$(sed -n 's/^ *evictions [0-9]* (\([0-9.]*\)\/s).*/\1/p' "$work/rb_uniform.txt" | head -n 1)
    echo "| setup | queries/s | ratio to pgbench -C | target |"
    echo "|---|---:|---:|---:|"
    printf '| pgbench -C -c 32 -j 2 (SELECT 1, new connection each; before, after) | %.0f, %.0f | | |\n' "$pgc1" "$pgc2"
    printf '| pgbench -C -c 32 -j 32 (before, after) | %.0f, %.0f | | |\n' "$pgc3" "$pgc4"
    printf '| pgbench -C, the best of the four: the baseline | %.0f | 1.00 | |\n' "$pgc"
    printf '| registry, uniform over 200, cap 20, 32 threads | %.0f | %s | >= 0.9 |\n' "$uni" "$(ratio "$uni" "$pgc")"
    printf '| registry, Zipf(1.1) over 200, cap 50, 16 threads | %.0f | %s | >= 5 |\n' "$zipf" "$(ratio "$zipf" "$pgc")"
    printf '| the same, max_connecting %s | %.0f | %s | >= 5 |\n' "$mconn" "$zipf_mc" "$(ratio "$zipf_mc" "$pgc")"
    echo
    echo "Zipf misses (connects / checkouts by tenant rank, the tenant pools' own counters):"
    echo
    echo '```'
    grep -E 'misses \(' "$work/rb_zipf.txt" | sed 's/^ *//' || true
    echo "with max_connecting $mconn:"
    grep -E 'misses \(' "$work/rb_zipf_mc.txt" | sed 's/^ *//' || true
    echo '```'
    echo
    echo "Cap slots in transit during the uniform run: the registry's open count (connections counted"
    echo "against the cap, connecting ones included) minus the server's live client backends, every"
    echo "100 ms, and what Little's law predicts in transit from the tenant pools' own connect time"
    echo "(connects/s x mean connect time); a slot idle in transit would show as a gap above that."
    echo "pgbench -C's average connection time in the same run: ${conn_ms:-?} ms with -j 2, ${conn_ms32:-?} ms with -j 32"
    echo "(the server's fork + start-up queue for its CPUs: more parallel connects, longer connects)."
    echo
    echo '```'
    grep -E 'open - backends|Little' "$work/rb_uniform.txt" | sed 's/^ *//'
    echo "t_ms open backends gap waiting cap"
    sed -n 's/^ *series *\([0-9]\)/\1/p' "$work/rb_uniform.txt" | tr -s ' ' | awk 'NR % 5 == 1' | head -n 40
    echo '```'
    echo "(every 5th sample shown; all are in the bench's output)"
    echo
    echo "Cold tenant (bench/registry_bench --parts ab --tenants 10000):"
    echo
    echo '```'
    sed -n '/^summary/,$p' "$work/rb_cold.txt"
    echo '```'
    echo
    echo "Commands: \`pgbench -n -C -M simple -f select1.sql -c 32 -j 2|32 -T $secs\` (before and after),"
    echo "\`registry_bench --parts c --dbs 200 --cap 20 --threads 32 --seconds $secs --zipf 0 --no-baseline --series 100 \"\$DB dbname=%s\"\`,"
    echo "the same with \`--cap 50 --threads 16 --zipf 1.1\` (no --series), and with \`--max-connecting $mconn\`,"
    echo "\`registry_bench --parts ab --tenants 10000 --cold 10 \"\$DB dbname=%s\"\`."
}

echo 'SELECT 1;' >"$work/select1.sql"
chmod 644 "$work/select1.sql"
want select1 && select1_suite
if want handover; then
    DATABASE_URL=$conninfo DBPOOL=$DBPOOL bash "$here/handover.sh"
fi
# opt-in (needs node and npm pg): SUITES=async
if want async; then
    echo
    echo "## Asynchronous statements (bench/async_bench.sh)"
    echo
    echo '```'
    DATABASE_URL=$conninfo BUILD_DIR=$BUILD_DIR DURATION=$DURATION REPS=$REPS \
        bash "$here/async_bench.sh" 2>/dev/null
    echo '```'
fi
want recovery && recovery_suite
if want micro; then
    echo
    echo "## Checkout + check-in with a stub driver (bench/pool_micro.c)"
    echo
    echo "Targets: 1 thread <= 100 ns (cpu); 8 threads on 1 connection within 2x of the naive pool."
    echo
    echo '```'
    "$BUILD_DIR/bench/pool_micro" --time 500 --reps 5 --threads 1,8 --sizes 1
    echo '```'
fi
want registry && registry_suite
exit 0
