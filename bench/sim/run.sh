#!/usr/bin/env bash
# run.sh - the simulations behind bench/RESULTS.md ("Simulation: many app
# servers on one PostgreSQL"), from the repository root after `make build`.
#
#   bench/sim/run.sh [BUILD]        the simulator only (about 1.5 minutes):
#                                   1. it_adaptive's scenario (8 processes, cap 20,
#                                      max_connections 60), 10 seeds, fixed caps of 7
#                                      and the adaptive budget: the numbers checked
#                                      against the real run
#                                   2. 100 app servers x 500 tenants, fixed caps vs
#                                      the adaptive budget; writes bench/sim/fleet.svg
#   bench/sim/run.sh real [BUILD]   the real run the simulator is checked against:
#                                   a throwaway PostgreSQL (max_connections 60, 100
#                                   tenant databases), 5 rounds of adaptive_run: one
#                                   connection per tenant and no connects, fixed caps
#                                   of 7, the adaptive budget
#                                   (about 8 minutes; ROUNDS=N for fewer; keep the
#                                   machine otherwise idle)
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=sim
if [ "${1:-}" = real ]; then
    mode=real
    shift
fi
build=${1:-build}
sim=$build/bench/sim/sim
run=$build/bench/sim/adaptive_run

# The model of this machine's server, calibrated on the real run (bench/RESULTS.md):
# connect capacity from the run with fixed caps of 7 (no refusals; its
# throughput is bound by connects): 4 connects in parallel of 30 ms on
# average with a long tail (133 connects/s); the time per call without a
# connect from the run with one connection per tenant and no connects
# (--size 1): 0.95 ms (32 threads through a loaded 2-core machine); a refused
# connect costs half a connect (fork, no authentication).
MODEL="--connect-par 4 --connect-ms 30 --refuse-ms 15 --query-ms 0.95"

# 100 app servers x 500 tenant databases on one bigger server (500
# connections, 16 connects in parallel: 800/s), 5 ms queries, open-loop
# arrivals of 5 requests/s per app server on average, Zipf(1.1) over the
# tenants, a diurnal swing of +-50% over a 600 s "day", callers time out
# after 5 s.
FLEET="--procs 100 --tenants 500 --rate 5 --diurnal 0.5 --day 600 --max-conn 500 \
--connect-par 16 --connect-ms 20 --query-ms 5 --size 5 --timeout 5000 --seconds 600 --warmup 60"

# median of the key=value field $1 over the summary lines on stdin
median() {
    grep -o "$1=[^ ]*" | cut -d= -f2 | sort -g |
        awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

summarise() { # label, file of summary lines
    printf "%-24s ops_per_s=%s wait_p99_ms=%s jain=%s (min %s) refusals_per_s=%s\n" "$1" \
        "$(median ops_per_s <"$2")" "$(median wait_p99_ms <"$2")" "$(median jain <"$2")" \
        "$(awk '{ for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == "jain" && (m == "" || a[2] < m)) m = a[2] } } END { print m }' "$2")" \
        "$(median refusals_per_s <"$2")"
}

if [ "$mode" = real ]; then
    dir=$(mktemp -d /tmp/dbpool-sim-real.XXXXXX)
    chmod 755 "$dir" # the server runs as postgres when we are root
    trap 'bash scripts/pg-throwaway.sh stop "$dir/pg" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    ci=$(bash scripts/pg-throwaway.sh start "$dir/pg")
    psql "$ci" -qc "ALTER SYSTEM SET max_connections = 60"
    bindir=$(dirname "$(command -v pg_ctl 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/pg/data" -w -s -l "$dir/pg/server.log" restart
    else
        "$bindir/pg_ctl" -D "$dir/pg/data" -w -s -l "$dir/pg/server.log" restart
    fi
    for i in $(seq 0 99); do
        printf "CREATE DATABASE ta%03d TEMPLATE template0 STRATEGY FILE_COPY;\n" "$i"
    done | psql "$ci" -q
    tmpl=${ci/dbname=postgres/dbname=%s}
    for round in $(seq 1 "${ROUNDS:-5}"); do
        echo "round $round, load $(cut -d' ' -f1 /proc/loadavg)"
        "$run" --fixed --cap 7 --tenants 7 --hot 7 --size 1 "$tmpl" | tail -1 >>"$dir/noconnect"
        "$run" --fixed --cap 7 "$tmpl" | tail -1 >>"$dir/fixed"
        "$run" "$tmpl" | tail -1 >>"$dir/adaptive"
    done
    summarise "real, no connects" "$dir/noconnect"
    summarise "real, fixed caps of 7" "$dir/fixed"
    summarise "real, adaptive" "$dir/adaptive"
    exit 0
fi

out=$(mktemp -d /tmp/dbpool-sim.XXXXXX)
trap 'rm -rf "$out"' EXIT
for seed in 1 2 3 4 5 6 7 8 9 10; do
    "$sim" $MODEL --seed "$seed" --fixed --cap 7 --tenants 7 --hot 7 --size 1 | tail -1 >>"$out/noconnect"
    "$sim" $MODEL --seed "$seed" --fixed --cap 7 | tail -1 >>"$out/fixed"
    "$sim" $MODEL --seed "$seed" | tail -1 >>"$out/adaptive"
    "$sim" $MODEL --seed "$seed" --seconds 30 --warmup 10 | tail -1 >>"$out/adaptive30"
done
summarise "sim, no connects" "$out/noconnect"
summarise "sim, fixed caps of 7" "$out/fixed"
summarise "sim, adaptive" "$out/adaptive"
summarise "sim, adaptive, 30 s" "$out/adaptive30"

echo "100 app servers x 500 tenants, max_connections 500:"
"$sim" $FLEET --cap 20 --label adaptive --series "$out/fleet-adaptive.csv" | tail -1
"$sim" $FLEET --cap 20 --interval 5000 --label adaptive-5s | tail -1
"$sim" $FLEET --cap 4 --fixed --label fixed-4 --series "$out/fleet-fixed.csv" | tail -1
"$sim" $FLEET --cap 5 --fixed --label fixed-5 | tail -1
"$sim" $FLEET --cap 20 --skew 0.8 --label adaptive-skew | tail -1
"$sim" $FLEET --cap 4 --fixed --skew 0.8 --label fixed-4-skew | tail -1
bash bench/sim/plot.sh "$out/fleet-adaptive.csv" "$out/fleet-fixed.csv" 500 \
    "100 app servers x 500 tenants, max_connections 500: adaptive budget (cap 20) vs fixed caps of 4" \
    >bench/sim/fleet.svg
echo "wrote bench/sim/fleet.svg"
