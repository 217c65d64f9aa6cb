#!/usr/bin/env bash
# registry_ab.sh - the registry at the connect-rate limit, two builds side by
# side in one run (issue 12 part 3): pgbench -C (the baseline), the Zipf mix
# and the uniform churn of bench/registry_bench.c with build A and build B,
# interleaved in each round (the order rotates), then the cold-tenant part of
# both. Ratios to pgbench -C are taken within a round (the best of that
# round's -j 2 and -j 32 runs), so slow drift of the machine's load cancels.
#
#   bash bench/registry_ab.sh A_REGISTRY_BENCH B_REGISTRY_BENCH
#   DATABASE_URL=... REPS=3 DURATION=10 bash bench/registry_ab.sh ...
#
# A and B are registry_bench binaries (e.g. one built from main in another
# build directory). Output: one line per run, then a summary table.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
A=${1:?usage: registry_ab.sh A_REGISTRY_BENCH B_REGISTRY_BENCH}
B=${2:?usage: registry_ab.sh A_REGISTRY_BENCH B_REGISTRY_BENCH}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
COLD=${COLD:-20}

die() { echo "registry_ab.sh: $*" >&2; exit 1; }
. "$here/lib.sh"
bench_workdir regab
bench_database registry_ab.sh
echo 'SELECT 1;' >"$work/select1.sql"
chmod 644 "$work/select1.sql"
tmpl="$conninfo dbname=%s"

pgbench_c() { # threads -> tps
    pgbench -n -C -M simple -f "$work/select1.sql" -c 32 -j "$1" -T "$DURATION" "$conninfo" \
        2>/dev/null | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
rb() { # binary mix -> "qps miss%"
    local out
    case $2 in
    zipf) out=$("$1" --parts c --dbs 200 --cap 50 --threads 16 --seconds "$DURATION" --zipf 1.1 \
        --no-baseline "$tmpl" 2>&1) ;;
    uniform) out=$("$1" --parts c --dbs 200 --cap 20 --threads 32 --seconds "$DURATION" --zipf 0 \
        --no-baseline "$tmpl" 2>&1) ;;
    esac
    echo "$out" >>"$work/rb.log"
    echo "$(echo "$out" | sed -n 's/^ *\([0-9.]*\) queries\/s.*/\1/p' | head -n 1)" \
        "$(echo "$out" | sed -n 's/.* all [0-9]*\/[0-9]* (\([0-9.]*\)%).*/\1/p' | head -n 1)" \
        "$(echo "$out" | grep -o 'ranks 1-10 [^;]*; ranks 11-50 [^;]*; ranks 51-200 [^;]*' | head -n 1)"
}

# prepare the 200 tenant databases once (untimed)
"$B" --parts c --dbs 200 --cap 50 --threads 2 --seconds 1 --no-baseline "$tmpl" >/dev/null 2>&1 ||
    die "registry_bench setup failed"

runs=(pgc2 zipf_A zipf_B uni_A uni_B pgc32)
declare -A val
echo "registry_ab: $REPS rounds x ${#runs[@]} runs x ${DURATION}s; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq 1 "$REPS"); do
    for i in $(seq 0 $((${#runs[@]} - 1))); do
        n=${runs[$(((i + rep - 1) % ${#runs[@]}))]}
        case $n in
        pgc2) v=$(pgbench_c 2) ;;
        pgc32) v=$(pgbench_c 32) ;;
        zipf_A) v=$(rb "$A" zipf) ;;
        zipf_B) v=$(rb "$B" zipf) ;;
        uni_A) v=$(rb "$A" uniform) ;;
        uni_B) v=$(rb "$B" uniform) ;;
        esac
        val[$n,$rep]=$v
        printf 'round %d %-7s %s   (loadavg %s)\n' "$rep" "$n" "$v" "$(cut -d' ' -f1 /proc/loadavg)"
    done
done

echo
echo "| round | pgbench -C j2 / j32 | Zipf A q/s (misses) | Zipf B q/s (misses) | Zipf A / pgbench -C | Zipf B / pgbench -C | uniform A | uniform B | uniform A / pgC | uniform B / pgC |"
echo "|---|---|---|---|---:|---:|---|---|---:|---:|"
for rep in $(seq 1 "$REPS"); do
    p2=${val[pgc2,$rep]} p32=${val[pgc32,$rep]}
    best=$(printf '%s\n%s\n' "$p2" "$p32" | sort -g | tail -n 1)
    read -r za zam _ <<<"${val[zipf_A,$rep]}"
    read -r zb zbm _ <<<"${val[zipf_B,$rep]}"
    read -r ua uam _ <<<"${val[uni_A,$rep]}"
    read -r ub ubm _ <<<"${val[uni_B,$rep]}"
    awk -v r="$rep" -v p2="$p2" -v p32="$p32" -v best="$best" -v za="$za" -v zam="$zam" -v zb="$zb" \
        -v zbm="$zbm" -v ua="$ua" -v uam="$uam" -v ub="$ub" -v ubm="$ubm" 'BEGIN {
        printf "| %d | %.0f / %.0f | %.0f (%s%%) | %.0f (%s%%) | %.2f | %.2f | %.0f (%s%%) | %.0f (%s%%) | %.2f | %.2f |\n",
            r, p2, p32, za, zam, zb, zbm, za / best, zb / best, ua, uam, ub, ubm, ua / best, ub / best }'
done
echo
echo "Zipf misses by rank bucket (connects / checkouts), every run:"
for rep in $(seq 1 "$REPS"); do
    for n in zipf_A zipf_B; do
        read -r _ _ rest <<<"${val[$n,$rep]}"
        echo "  round $rep $n: $rest"
    done
done

echo
echo "Cold tenant, 10,000 idle tenants registered (A, then B):"
for bin in "$A" "$B"; do
    "$bin" --parts ab --tenants 10000 --cold "$COLD" "$tmpl" 2>&1 | sed -n '/^summary/,$p'
done
echo "loadavg at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
