#!/usr/bin/env bash
# demo-tour.sh BUILD_DIR CONNINFO - what `make demo` runs after the build:
#   1. examples/demo: a pool shared by 16 threads, rollback at check-in, a
#      killed connection replaced;
#   2. dbpool bench through the pool vs --direct (same number of connections);
#   3. an overload burst: 32 clients on 2 connections with a short queue
#      target, so the CoDel queue sheds load (drops) instead of piling it up;
#   4. dbpool drill: the database goes away for 5 s and comes back; writes an
#      HTML report with the timeline.
set -euo pipefail
build=$1
conninfo=$2
cli="$build/bin/dbpool"
report="$PWD/dbpool-drill.html"

step() { printf '\n=== %s\n' "$*"; }

step "1. the pool at work (examples/demo.c)"
"$build/examples/demo" "$conninfo"

if [ ! -x "$cli" ]; then
    echo "demo-tour: $cli was not built; skipping the bench and the drill" >&2
    exit 0
fi

step "2. SELECT 1, 8 clients on 8 connections: through the pool, then --direct"
"$cli" bench -c 8 -p 8 -T 5s -P 0 "$conninfo" | tail -n 12
"$cli" bench -c 8 -T 5s -P 0 --direct "$conninfo" | tail -n 6

step "3. overload burst: 32 clients, 2 connections, each query 20 ms, queue_target 10ms"
"$cli" bench -c 32 -p 2 -T 4s -P 0 -w sleep:20 --timeout 2s \
    --set queue_target=10ms --set queue_interval=100ms "$conninfo" | tail -n 14 || true

step "4. outage drill: 5 s healthy, the database refuses for 5 s, 8 s after"
"$cli" drill -B 5s -O 5s -A 8s -r 500 -o "$report" "$conninfo" | tail -n 12 || true
printf '\nThe drill report is %s (open it in a browser).\n' "$report"
