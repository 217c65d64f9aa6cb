#!/usr/bin/env bash
# handover.sh - how a returned connection reaches a waiter (barge_window, see
# docs/pool.md "Hand-over"): strict FIFO (barge_window=0), bounded barging
# (the default window) and unfair barging (a window of one hour) on the same
# server in the same run, setups interleaved, against the pool without
# queueing and against connections of their own.
#
#   bash bench/handover.sh                    start a throwaway PostgreSQL, run, stop it
#   DATABASE_URL=... bash bench/handover.sh   use that database instead
#
# Two loads:
#   A. SELECT 1, 16 client threads on 8 connections: throughput, and context
#      switches per transaction (perf stat, when perf works here) - the cost
#      of a wake-up per hand-over.
#   B. 64 clients on 4 connections, 5 ms queries (overload): goodput, and the
#      p99 and maximum wait in the queue - the fairness that barging risks.
#      CoDel is set out of the way (queue_target 10 s) so that starvation
#      shows as a long wait, not as a drop.
#
# Environment (all optional):
#   DURATION=10  seconds per run     REPS=3   rounds (median reported)
#   DBPOOL=path  the dbpool CLI (default: build/bin/dbpool, built if missing)
#   BUILD_DIR=dir                    LOADS="A B"  which loads to run
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
DURATION=${DURATION:-10}
REPS=${REPS:-3}
LOADS=${LOADS:-A B}
BUILD_DIR=${BUILD_DIR:-$repo/build}
DBPOOL=${DBPOOL:-$BUILD_DIR/bin/dbpool}

die() { echo "handover.sh: $*" >&2; exit 1; }
for tool in pgbench psql jq; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install postgresql-client jq)"
done
if [ ! -x "$DBPOOL" ]; then
    echo "handover.sh: building the dbpool CLI in $BUILD_DIR" >&2
    cmake -S "$repo" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target dbpool_cli >/dev/null
fi
[ -x "$DBPOOL" ] || die "no dbpool CLI at $DBPOOL"

. "$here/lib.sh"
bench_workdir handover
bench_database handover.sh
echo 'SELECT 1;' >"$work/select1.sql"
chmod 644 "$work/select1.sql"

# perf stat counts the context switches of the bench process (all threads).
use_perf=0
if command -v perf >/dev/null && perf stat -e context-switches -x, -o "$work/perf.try" -- true 2>/dev/null; then
    use_perf=1
fi

UNFAIR=1h # barging never stops
declare -A args=(
    [A_strict]="-w select1 -c 16 -p 8 --set barge_window=0"
    [A_bounded]="-w select1 -c 16 -p 8"
    [A_window5]="-w select1 -c 16 -p 8 --set barge_window=5ms"
    [A_unfair]="-w select1 -c 16 -p 8 --set barge_window=$UNFAIR"
    [A_pool16]="-w select1 -c 16 -p 16"
    [A_direct8]="-w select1 --direct -c 8"
    [B_strict]="-w sleep:5 -c 64 -p 4 --set barge_window=0"
    [B_bounded]="-w sleep:5 -c 64 -p 4"
    [B_unfair]="-w sleep:5 -c 64 -p 4 --set barge_window=$UNFAIR"
    [B_direct4]="-w sleep:5 --direct -c 4"
)
B_QUEUE="--set queue_target=10s --set queue_interval=10s --timeout 60s"
names_A=(A_strict A_bounded A_window5 A_unfair A_pool16 A_direct8 A_pgbench8)
names_B=(B_strict B_bounded B_unfair B_direct4)

declare -A tps cs qp99 qmax jain starved
run() { # name rep
    local n=$1 rep=$2 extra=""
    case $n in B_*) extra=$B_QUEUE ;; esac
    # Every load-A run, pgbench's too, runs under the same perf stat: counting
    # context switches slows the counted process (a perf hook on each of its
    # ~2 switches per SELECT 1), so a ratio between a counted and an uncounted
    # run would be biased against the counted one.
    local perf=()
    if [ "$use_perf" = 1 ] && [ "${n:0:1}" = A ]; then
        perf=(perf stat -e context-switches -x, -o "$work/perf.out" --)
    fi
    if [ "$n" = A_pgbench8 ]; then
        "${perf[@]}" pgbench -n -M simple -f "$work/select1.sql" -c 8 -j 8 -T "$DURATION" "$conninfo" \
            2>/dev/null >"$work/pgbench.out"
        tps[$n,$rep]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$work/pgbench.out")
        if [ ${#perf[@]} -gt 0 ]; then
            local sw txn
            sw=$(awk -F, '/context-switches/ {print $1}' "$work/perf.out")
            txn=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/pgbench.out")
            cs[$n,$rep]=$(awk -v s="$sw" -v t="$txn" 'BEGIN { if (t > 0) printf "%.2f", s / t }')
        fi
        return
    fi
    # shellcheck disable=SC2086
    "${perf[@]}" "$DBPOOL" bench -T "$DURATION" -P 0 --json ${args[$n]} $extra "$conninfo" >"$work/out.json"
    tps[$n,$rep]=$(jq -r .tps "$work/out.json")
    qp99[$n,$rep]=$(jq -r '.queue_ms.p99 // "-"' "$work/out.json")
    qmax[$n,$rep]=$(jq -r '.queue_ms.max // "-"' "$work/out.json")
    jain[$n,$rep]=$(jq -r .fairness.jain "$work/out.json")
    starved[$n,$rep]=$(jq -r .fairness.starved_clients "$work/out.json")
    if [ ${#perf[@]} -gt 0 ]; then
        local sw txn
        sw=$(awk -F, '/context-switches/ {print $1}' "$work/perf.out")
        txn=$(jq -r .transactions "$work/out.json")
        cs[$n,$rep]=$(awk -v s="$sw" -v t="$txn" 'BEGIN { if (t > 0) printf "%.2f", s / t }')
    fi
}

median() { tr ' ' '\n' | grep -v -e '^$' -e '^-$' | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
med() { # array-name name -> median over rounds
    local -n a=$1
    local rep vals=""
    for rep in $(seq 1 "$REPS"); do vals="$vals ${a[$2,$rep]:-}"; done
    echo "$vals" | median
}
rounds() { # array-name name fmt -> all rounds
    local -n a=$1
    local rep out=""
    for rep in $(seq 1 "$REPS"); do out="$out $(printf "$3" "${a[$2,$rep]:-0}")"; done
    echo "${out# }"
}
# median over rounds of the ratio within each round (cancels slow drift)
paired() {
    local rep
    for rep in $(seq 1 "$REPS"); do
        awk -v a="${tps[$1,$rep]}" -v b="${tps[$2,$rep]}" 'BEGIN { if (b > 0) printf "%.3f\n", a / b }'
    done | median | xargs printf '%.2f'
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for load in $LOADS; do
    declare -n names="names_$load"
    echo "handover.sh: load $load, $REPS rounds x ${#names[@]} setups x ${DURATION}s" >&2
    for rep in $(seq 1 "$REPS"); do
        for i in $(seq 0 $((${#names[@]} - 1))); do
            n=${names[$(((i + rep - 1) % ${#names[@]}))]}
            run "$n" "$rep"
            [ -n "${tps[$n,$rep]}" ] || die "run $n produced no result"
            printf '  round %d  %-11s %9.1f tps  cs/txn %-5s queue p99 %-8s max %s ms\n' "$rep" "$n" \
                "${tps[$n,$rep]}" "${cs[$n,$rep]:--}" "${qp99[$n,$rep]:--}" "${qmax[$n,$rep]:--}" >&2
        done
    done
    unset -n names
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo
echo "## Hand-over: strict FIFO vs bounded barging vs unfair barging"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, $cpu"
echo "- load average at start: $load_start, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- PostgreSQL $server_version; $REPS rounds of ${DURATION}s per setup, interleaved; medians, all rounds in brackets"
echo "- strict = \`--set barge_window=0\`, bounded = the default window, unfair = \`--set barge_window=$UNFAIR\`"
if [[ " $LOADS " == *" A "* ]]; then
    echo
    echo "### A. SELECT 1, 16 threads on 8 connections"
    echo
    echo "| setup | tps | context switches / txn | rounds (tps) |"
    echo "|---|---:|---:|---|"
    for n in "${names_A[@]}"; do
        printf '| %s | %.0f | %s | %s |\n' "$n" "$(med tps "$n")" "$(med cs "$n")" "$(rounds tps "$n" '%.0f')"
    done
    echo
    echo "| ratio (median of per-round ratios) | value | target |"
    echo "|---|---:|---:|"
    echo "| bounded 16 on 8 / pool 16 on 16 | $(paired A_bounded A_pool16) | >= 0.95 |"
    echo "| bounded 16 on 8 / 8 direct connections | $(paired A_bounded A_direct8) | >= 0.90 |"
    echo "| strict 16 on 8 / pool 16 on 16 | $(paired A_strict A_pool16) | |"
    echo "| unfair 16 on 8 / pool 16 on 16 | $(paired A_unfair A_pool16) | |"
    echo "| dbpool bench --direct -c 8 / pgbench -c 8 -j 8 | $(paired A_direct8 A_pgbench8) | >= 0.95 |"
fi
if [[ " $LOADS " == *" B "* ]]; then
    echo
    echo "### B. 64 clients on 4 connections, 5 ms queries"
    echo
    echo "| setup | goodput tps | queue p99 ms | queue max ms | Jain's index | clients starved | rounds (tps) |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for n in "${names_B[@]}"; do
        printf '| %s | %.0f | %s | %s | %s | %s | %s |\n' "$n" "$(med tps "$n")" "$(med qp99 "$n")" \
            "$(med qmax "$n")" "$(med jain "$n")" "$(med starved "$n")" "$(rounds tps "$n" '%.0f')"
    done
    echo
    echo "(queue times count completed checkouts only: a starved client shows as a low Jain's index"
    echo "and as clients with no transaction, not as a long wait.)"
    echo
    echo "| ratio | value | target |"
    echo "|---|---:|---:|"
    echo "| bounded goodput / 4 direct connections (median of per-round ratios) | $(paired B_bounded B_direct4) | >= 0.97 |"
    echo "| bounded queue p99 / strict queue p99 (medians) | $(awk -v a="$(med qp99 B_bounded)" -v b="$(med qp99 B_strict)" 'BEGIN { if (b > 0) printf "%.2f", a / b }') | <= 1.10 |"
fi
echo
echo "Command: \`bash bench/handover.sh\` (DURATION=$DURATION REPS=$REPS); the setups are \`dbpool bench -T ${DURATION}s\` with:"
echo
echo '```'
for n in "${names_A[@]}" "${names_B[@]}"; do
    case $n in
    A_pgbench8) echo "A_pgbench8  pgbench -n -M simple -f select1.sql -c 8 -j 8" ;;
    B_*) echo "$n  ${args[$n]} $B_QUEUE" ;;
    *) echo "$n  ${args[$n]}" ;;
    esac
done
echo '```'
