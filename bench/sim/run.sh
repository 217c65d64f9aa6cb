#!/usr/bin/env bash
# run.sh - the simulations behind bench/RESULTS.md ("Simulation: many app
# servers on one PostgreSQL"), from the repository root after `make build`.
#
#   bench/sim/run.sh [BUILD]        the simulator only (about 2 minutes):
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
#                                   (about 5 minutes; ROUNDS=N for fewer; keep the
#                                   machine otherwise idle; KEEP=DIR keeps each
#                                   run's output with its per-second series);
#                                   prints the MODEL calibrated on its rounds
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

# The model of this machine's server, calibrated on 16 rounds of the real
# run, 2026-12-03 15:18-15:36 UTC (bench/RESULTS.md (j), "The adaptive row:
# the connect rate"):
# connect capacity from the run with fixed caps of 7 (no refusals; its
# throughput is bound by connects): 4 connects in parallel (build/bench/sim/
# connect_cost: the server's connect rate stops growing at 4-8 connects in
# flight) of 16.6 ms on average with a long tail: 4000 / 16.6 = 241
# connects/s, the fixed runs' median (pg_stat_database.sessions);
# a refused connect costs 0.6 of an accepted one (connect_cost --fill: 650
# refusals/s against 410 connects/s); the time per call without a connect
# from the run with one connection per tenant and no connects (--size 1):
# 0.88 ms (28 451 calls/s, 32 threads through the loaded 2-core machine).
# This machine's connect rate moves with the other load on it (148-382
# connects/s between rounds minutes apart), so re-calibrate on the day's
# runs: `bench/sim/run.sh real` prints the MODEL line for them; pass it as
# MODEL="..." bench/sim/run.sh.
MODEL=${MODEL:-"--connect-par 4 --connect-ms 16.6 --refuse-ms 10.0 --query-ms 0.88"}

# 100 app servers x 500 tenant databases on one bigger server (500
# connections, 16 connects in parallel: 800/s), 5 ms queries, open-loop
# arrivals of 5 requests/s per app server on average, Zipf(1.1) over the
# tenants, a diurnal swing of +-50% over a 600 s "day", callers time out
# after 5 s.
FLEET="--procs 100 --tenants 500 --rate 5 --diurnal 0.5 --day 600 --max-conn 500 \
--connect-par 16 --connect-ms 20 --refuse-ms 12 --query-ms 5 --size 5 --timeout 5000 --seconds 600 --warmup 60"

# median of the key=value field $1 over the summary lines on stdin
median() {
    grep -o "$1=[^ ]*" | cut -d= -f2 | sort -g |
        awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# min-max of the field $1 over the summary lines on stdin
range() {
    grep -o "$1=[^ ]*" | cut -d= -f2 | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'
}

summarise() { # label, file of summary lines
    printf "%-24s ops_per_s=%s (%s) wait_p99_ms=%s (%s) jain=%s (min %s) refusals_per_s=%s connects_per_s=%s waits_below_1ms=%s\n" "$1" \
        "$(median ops_per_s <"$2")" "$(range ops_per_s <"$2")" \
        "$(median wait_p99_ms <"$2")" "$(range wait_p99_ms <"$2")" "$(median jain <"$2")" \
        "$(awk '{ for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == "jain" && (m == "" || a[2] < m)) m = a[2] } } END { print m }' "$2")" \
        "$(median refusals_per_s <"$2")" "$(median connects_per_s <"$2")" "$(median waits_below_1ms <"$2")"
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
        "$run" --series --fixed --cap 7 --tenants 7 --hot 7 --size 1 "$tmpl" | tee "$dir/noconnect.$round" | tail -1 >>"$dir/noconnect"
        "$run" --series --fixed --cap 7 "$tmpl" | tee "$dir/fixed.$round" | tail -1 >>"$dir/fixed"
        "$run" --series "$tmpl" | tee "$dir/adaptive.$round" | tail -1 >>"$dir/adaptive"
    done
    if [ -n "${KEEP:-}" ]; then # each run's output, with its per-second series
        mkdir -p "$KEEP"
        cp "$dir"/*.[0-9]* "$KEEP"/
    fi
    summarise "real, no connects" "$dir/noconnect"
    summarise "real, fixed caps of 7" "$dir/fixed"
    summarise "real, adaptive" "$dir/adaptive"
    # the model for these rounds: 4 parallel connects at the fixed run's
    # connect rate; the time per call scaled from the simulated no-connect
    # run (0.95 ms gives 26 269 calls/s)
    awk -v c="$(median connects_per_s <"$dir/fixed")" -v q="$(median ops_per_s <"$dir/noconnect")" \
        'BEGIN { cm = 4000 / c; printf "MODEL=\"--connect-par 4 --connect-ms %.1f --refuse-ms %.1f --query-ms %.2f\"\n", cm, 0.6 * cm, 0.95 * 26269 / q }'
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
