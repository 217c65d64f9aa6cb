#!/usr/bin/env bash
# screen.sh - a rule screened on it_adaptive's scenario in the simulator
# (bench/RESULTS.md (l)): N16 seeds of 16 s counted after 8 and N30 of 30 s
# counted after 15, with run.sh's calibrated MODEL; prints Jain's index
# (median, min, runs below 0.9), the median ops/s and refusals/s.
#
#   bench/sim/screen.sh LABEL [BUILD]     from the repository root
#   FIRST16=41 N16=60 FIRST30=21 N30=40   other seeds (defaults 1, 40, 1, 20)
#
# Variants of aimd.c are screened by building the simulator with them
# (bench/sim/grow-share.patch puts its knobs behind environment variables).
# shellcheck disable=SC2086 # $MODEL is a list of options, split on purpose
set -euo pipefail
cd "$(dirname "$0")/../.."
label=${1:-rule}
sim=${2:-build}/bench/sim/sim
# shellcheck disable=SC2016 # the $ is run.sh's, not ours
MODEL=${MODEL:-$(sed -n 's/^MODEL=\${MODEL:-"\(.*\)"}$/\1/p' bench/sim/run.sh)}
out=$(mktemp -d /tmp/dbpool-screen.XXXXXX)
trap 'rm -rf "$out"' EXIT
first16=${FIRST16:-1} n16=${N16:-40} first30=${FIRST30:-1} n30=${N30:-20}
for s in $(seq "$first16" $((first16 + n16 - 1))); do
    "$sim" $MODEL --seed "$s" | tail -1
done >"$out/16"
for s in $(seq "$first30" $((first30 + n30 - 1))); do
    "$sim" $MODEL --seed "$s" --seconds 30 --warmup 15 | tail -1
done >"$out/30"
stats() { # file of summary lines
    python3 - "$1" <<'PY'
import statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in open(sys.argv[1])]
j = sorted(float(r["jain"]) for r in rows)
med = lambda k: statistics.median(float(r[k]) for r in rows)
print("jain %.3f min %.3f below_0.9 %d/%d ops_per_s %.0f refusals_per_s %.1f"
      % (statistics.median(j), j[0], sum(x < 0.9 for x in j), len(j), med("ops_per_s"), med("refusals_per_s")), end="")
PY
}
echo "$label | 16 s: $(stats "$out/16") | 30 s: $(stats "$out/30")"
