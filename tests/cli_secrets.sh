#!/usr/bin/env bash
# cli_secrets.sh DBPOOL - the dbpool CLI never prints a password (docs/cli.md).
#
# Runs every command (bench, drill, check, and the bare tool) with malformed
# command lines - bad option values, missing values, unknown options, extra
# arguments, `--long=value` forms - with a conninfo holding a planted password
# in every argument position, as a URI and as key=value (quoted, spaced,
# percent-encoded, invalid), and checks that the password is in neither stdout
# nor stderr. They fail before connecting (a conninfo there points at a
# closed port on 127.0.0.1 anyway). A few well-formed invocations do connect,
# to that port (refused at once; each bounded by `timeout`), and print the
# database they tried. No server is needed.
set -u

DBPOOL=${1:?usage: cli_secrets.sh path/to/dbpool}
[ -x "$DBPOOL" ] || { echo "cli_secrets: $DBPOOL is not executable" >&2; exit 1; }

# Nothing from the environment: only what the command line says.
unset DATABASE_URL PGHOST PGHOSTADDR PGPORT PGUSER PGPASSWORD PGDATABASE PGSERVICE \
    PGSERVICEFILE PGPASSFILE PGOPTIONS PGAPPNAME PGCONNECT_TIMEOUT

work=$(mktemp -d /tmp/dbpool-cli-secrets-XXXXXX) || exit 1
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1 # drill's default report file lands here, if anywhere
export PGPASSFILE="$work/no-such-pgpass" # not ~/.pgpass

# A port nothing listens on: connects are refused at once.
CLOSED=1
PW=s3cr3tPW
# Any 6 characters of it in the output count as a leak (catches cut or
# partly encoded copies too).
LEAK_RE='s3cr3t|3cr3tP|cr3tPW'

# Conninfos holding the password: URI and key=value forms, valid and not.
CONNINFOS=(
    "postgresql://u:$PW@127.0.0.1:$CLOSED/db"
    "postgres://u:$PW@127.0.0.1:$CLOSED/db?connect_timeout=2"
    "postgresql://u@127.0.0.1:$CLOSED/db?password=$PW"
    "postgresql://u:s3cr3t%50W@127.0.0.1:$CLOSED/db"
    "host=127.0.0.1 port=$CLOSED password=$PW"
    "host=127.0.0.1 port=$CLOSED password='$PW'"
    "host=127.0.0.1 port=$CLOSED password = $PW dbname=x"
    "host=127.0.0.1 port=$CLOSED password='$PW with spaces \\' quote'"
    "port=$CLOSED password=$PW host=127.0.0.1"
    # invalid conninfos: libpq's parse errors quote parts of the input
    "postgresql://u:$PW@[::1/db"
    "postgresql://u:$PW%zz@127.0.0.1/db"
    "postgresql://u:$PW@127.0.0.1:99x/db"
    "postgresql://u@127.0.0.1/db?password=$PW&bogus=1"
    "host=127.0.0.1 password='$PW"
    "host=127.0.0.1 password=$PW bogus"
    "host=127.0.0.1 password=$PW bogus=1"
    "host=127.0.0.1 port=$PW"
    "postgresql://u:$PW@127.0.0.1:$CLOSED/db?sslmode=require&bad"
)

checked=0
failed=0

fail() {
    echo "FAIL: $*" >&2
    failed=$((failed + 1))
}

# run EXPECT ARGS...: run dbpool ARGS; the password must not appear, the exit
# status must be EXPECT (2 bad command line, 1 failure, "12" either), and an
# error run must say something. $BOUND (a `timeout` command) for the runs that
# connect: the malformed ones stop at the command line, and the many of them
# run faster without a `timeout` process each (CTest bounds the whole test).
BOUND=()
run() {
    local expect=$1 rc
    shift
    "${BOUND[@]}" "$DBPOOL" "$@" >"$work/out" 2>"$work/err" </dev/null
    rc=$?
    checked=$((checked + 1))
    if grep -Eaq "$LEAK_RE" "$work/out" "$work/err"; then
        fail "password printed by: dbpool $(printf '%q ' "$@")"
        grep -Ea "$LEAK_RE" "$work/out" "$work/err" | head -n 3 >&2
        return
    fi
    case "$expect:$rc" in
    2:2 | 1:1 | 12:1 | 12:2 | 0:0) ;;
    *)
        fail "exit $rc (want $expect): dbpool $(printf '%q ' "$@")"
        head -n 3 "$work/err" >&2
        return
        ;;
    esac
    if [ "$rc" -ne 0 ] && [ ! -s "$work/err" ] && [ ! -s "$work/out" ]; then
        fail "exit $rc without a message: dbpool $(printf '%q ' "$@")"
    fi
}

# ---- the checker itself must be able to fail --------------------------------
printf 'dbpool: got %s\n' "postgresql://u:$PW@h/db" >"$work/probe"
grep -Eaq "$LEAK_RE" "$work/probe" || { echo "cli_secrets: leak pattern matches nothing" >&2; exit 1; }
printf 'dbpool: got postgresql://u:s3cr3t%%50W@h/db\n' >"$work/probe"
grep -Eaq "$LEAK_RE" "$work/probe" || { echo "cli_secrets: encoded leak not caught" >&2; exit 1; }

# ---- per command: options taking a value, short and long ----------------------
bench_opts=(-c --clients -p --pool-size -T --duration -w --workload -f --file --rows
    -P --progress --timeout --set --metrics)
drill_opts=(-m --mode -c --clients -p --pool-size -r --rate -w --workload -d --deadline
    -B --before -O --outage -A --after -i --interval -o --output --set)
check_opts=(-n --count -t --timeout)
bench_flags=(--direct --json -h)
drill_flags=(--json)
check_flags=(--no-pool --json)

# Every form for two conninfos (a URI and key=value with a quoted password),
# and for each of the others the positions where a conninfo lands by mistake.
FULL=("${CONNINFOS[0]}" "${CONNINFOS[5]}")

for ci in "${FULL[@]}"; do
    # the bare tool: the command forgotten or misspelt
    run 2 "$ci" bench
    run 2 "$ci" "$ci"
    run 2 "--$ci"
    run 2 "-$ci"
    run 2 bnech "$ci"

    for cmd in bench drill check; do
        case $cmd in
        bench) opts=("${bench_opts[@]}") flags=("${bench_flags[@]}") ;;
        drill) opts=("${drill_opts[@]}") flags=("${drill_flags[@]}") ;;
        check) opts=("${check_opts[@]}") flags=("${check_flags[@]}") ;;
        esac

        # the conninfo as the value of every option (so no conninfo left:
        # usage error; options that take a file name may get as far as
        # connecting), as -o URL, --option URL and --option=URL
        for o in "${opts[@]}"; do
            run 12 "$cmd" "$o" "$ci"
            case $o in
            --*) run 12 "$cmd" "$o=$ci" ;;
            esac
        done
        # every option with a value that is part of a conninfo, and empty;
        # the conninfo where it belongs
        for o in "${opts[@]}"; do
            run 12 "$cmd" "$o" "password=$PW" "$ci"
            run 12 "$cmd" "$o" "" "$ci"
        done
        # flags that take no value given one
        for f in "${flags[@]}"; do
            case $f in
            --*) run 2 "$cmd" "$f=$ci" ;;
            esac
        done
        # unknown options, before and around the conninfo
        run 2 "$cmd" --bogus "$ci"
        run 2 "$cmd" "--$ci"
        run 2 "$cmd" -Z "$ci"
        run 2 "$cmd" "-Z$ci"
        # an option value missing at the end (after the conninfo: an extra argument)
        run 2 "$cmd" "$ci" -c
        run 2 "$cmd" "$ci" --bogus
        # extra arguments, the conninfo in each position
        run 2 "$cmd" "$ci" "$ci"
        run 2 "$cmd" a b "$ci"
        run 2 "$cmd" -T 1 s "$ci"
        run 2 "$cmd" -c 4 s "$ci"
        # --set with the conninfo (or part of it) inside the pair
        if [ "$cmd" != check ]; then
            run 2 "$cmd" --set "lifo=true $ci"
            run 2 "$cmd" --set "connect_timeout=$ci"
            run 2 "$cmd" --set "name=x $ci"
            run 2 "$cmd" --set "bogus=$ci"
        fi
    done
done

for ci in "${CONNINFOS[@]}"; do
    run 2 "$ci"
    run 2 help "$ci"
    for cmd in bench drill check; do
        run 2 "$cmd" -c "$ci"        # check has no -c: an unknown option
        run 2 "$cmd" --clients="$ci" # and no --clients
        run 2 "$cmd" "--bogus=$ci"
        run 2 "$cmd" extra "$ci"
        run 2 "$cmd" "$ci" extra
        DATABASE_URL=$ci run 2 "$cmd" -c 0
    done
    run 2 bench --set "$ci"
    run 2 drill "--set=$ci"
    run 2 bench -w "$ci"
    run 2 drill -m "$ci"
    run 2 check -n "$ci"
done

# ---- invalid conninfos where the conninfo belongs: a parse error, no echo ----
for ci in "${CONNINFOS[@]:9}"; do
    for cmd in bench drill check; do
        run 2 "$cmd" "$ci"
        DATABASE_URL=$ci run 2 "$cmd"
    done
done

# ---- well-formed: they connect (to a closed port) and show the database -------
URI="postgresql://u:$PW@127.0.0.1:$CLOSED/db"
KV="host=127.0.0.1 port=$CLOSED user=u password='$PW'"
BOUND=(timeout -k 5 30)
for ci in "$URI" "$KV"; do
    run 1 check -t 2 "$ci"
    run 1 check -t 2 --no-pool --json "$ci"
    run 1 bench -T 200ms -c 1 -P 0 --set connect_timeout=1s "$ci"
    run 1 bench --direct -T 200ms -c 1 --json "$ci"
    run 1 drill -B 100ms -O 100ms -A 100ms -i 50ms --set connect_timeout=1s -o "$work/r.html" "$ci"
    DATABASE_URL=$ci run 1 check -t 2
done
# check's report names the database, password masked
timeout -k 5 30 "$DBPOOL" check -t 2 --no-pool "$KV" >"$work/out" 2>&1
checked=$((checked + 1))
grep -q "^database .*password=\*\*\*\*\*\*\*\*" "$work/out" ||
    fail "check does not show the database with password=********: $(head -n 1 "$work/out")"
# a misplaced conninfo is shown redacted, so the user sees what went wrong
"$DBPOOL" bench -c "$URI" >"$work/out" 2>&1
checked=$((checked + 1))
grep -q "clients wants .*got 'user=u password=\*\*\*\*\*\*\*\* .*host=127.0.0.1" "$work/out" ||
    fail "bench -c URI: not shown redacted: $(head -n 1 "$work/out")"

echo "cli_secrets: $checked invocations, $failed failed"
[ "$failed" -eq 0 ]
