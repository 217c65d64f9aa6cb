#!/usr/bin/env bash
# cli_args.sh DBPOOL - dbpool command lines that are valid but unusual (issue 11):
#   - an output file that cannot be written (bench --metrics, drill --output)
#     fails at once with a message and exit status 1, before connecting;
#     an existing file is not truncated and a new one not left behind when
#     the run fails before writing it;
#   - a conninfo with long values (hundreds to thousands of bytes, values that
#     double when escaped, URI and key=value) is accepted by every command.
# No server is needed: runs that get as far as connecting point at a closed
# port on 127.0.0.1 (refused at once) and are bounded by `timeout`.
set -u

DBPOOL=${1:?usage: cli_args.sh path/to/dbpool}
[ -x "$DBPOOL" ] || { echo "cli_args: $DBPOOL is not executable" >&2; exit 1; }
unset DATABASE_URL PGHOST PGHOSTADDR PGPORT PGUSER PGPASSWORD PGDATABASE PGSERVICE \
    PGSERVICEFILE PGOPTIONS PGAPPNAME PGCONNECT_TIMEOUT

work=$(mktemp -d /tmp/dbpool-cli-args-XXXXXX) || exit 1
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
export PGPASSFILE="$work/no-such-pgpass" # not ~/.pgpass

CLOSED="host=127.0.0.1 port=1"
checked=0
failed=0

fail() {
    echo "FAIL: $*" >&2
    failed=$((failed + 1))
}

# run ARGS...: dbpool ARGS with stdout in $work/out, stderr in $work/err; sets rc.
run() {
    timeout -k 5 60 "$DBPOOL" "$@" >"$work/out" 2>"$work/err" </dev/null
    rc=$?
    checked=$((checked + 1))
}

# expect_rc WANT WHAT
expect_rc() {
    if [ "$rc" -ne "$1" ]; then
        fail "$2: exit $rc, want $1"
        head -n 5 "$work/err" >&2
    fi
}

# expect_in FILE REGEX WHAT / expect_not_in FILE REGEX WHAT
expect_in() {
    grep -Eq -- "$2" "$work/$1" || { fail "$3: no /$2/ in $1"; head -n 5 "$work/$1" >&2; }
}
expect_not_in() {
    ! grep -Eq -- "$2" "$work/$1" || { fail "$3: /$2/ in $1"; head -n 5 "$work/$1" >&2; }
}

# ---- output files that cannot be written ---------------------------------------
# Missing directory and a directory in place of the file: both fail for root too.
for bad in "$work/missing/m.prom" "$work"; do
    run bench -T 1 -c 1 --metrics "$bad" "$CLOSED"
    expect_rc 1 "bench --metrics $bad"
    expect_in err "cannot write metrics to '$bad': (No such file or directory|Is a directory)" \
        "bench --metrics $bad"
    expect_not_in err "connect" "bench --metrics $bad: failed before trying to connect"
    expect_not_in out "." "bench --metrics $bad: no report"

    run drill -B 1s -O 1s -A 1s -o "$bad" "$CLOSED"
    expect_rc 1 "drill -o $bad"
    expect_in err "cannot write the report to '$bad': (No such file or directory|Is a directory)" \
        "drill -o $bad"
    expect_not_in err "relay|connect" "drill -o $bad: failed before starting the relay"
done
# --metrics with --direct is still a command-line error, before the path is looked at
run bench --direct --metrics "$work/missing/m.prom" "$CLOSED"
expect_rc 2 "bench --direct --metrics"
expect_in err "needs the pool" "bench --direct --metrics"

# A run that fails (nothing listens) leaves an existing file as it was and does
# not leave a new one behind.
echo "old contents" >"$work/old.prom"
run bench -T 1 -c 1 -P 0 --set connect_timeout=1s --metrics "$work/old.prom" "$CLOSED"
expect_rc 1 "bench --metrics old.prom, no server"
expect_in err "cannot connect" "bench --metrics old.prom, no server"
[ "$(cat "$work/old.prom")" = "old contents" ] || fail "bench truncated old.prom although it wrote nothing"
run bench -T 1 -c 1 -P 0 --set connect_timeout=1s --metrics "$work/new.prom" "$CLOSED"
expect_rc 1 "bench --metrics new.prom, no server"
[ ! -e "$work/new.prom" ] || fail "bench left an empty new.prom behind"
run drill -B 100ms -O 100ms -A 100ms -i 50ms --set connect_timeout=1s -o "$work/new.html" "$CLOSED"
expect_rc 1 "drill -o new.html, no server"
expect_in err "cannot connect through the relay" "drill -o new.html, no server"
[ ! -e "$work/new.html" ] || fail "drill left an empty new.html behind"

# ---- long conninfo values ------------------------------------------------------
a600=$(printf 'a%.0s' $(seq 600))
a5000=$(printf 'a%.0s' $(seq 5000))
q700=$(printf "\\\\'%.0s" $(seq 700)) # \' x 700: a value of 700 quotes, escaped again on output
longs=(
    "$CLOSED application_name=$a600"
    "$CLOSED application_name=$a5000 password=pw"
    "$CLOSED options='-c search_path=$a600'"
    "$CLOSED application_name='$q700'"
    "postgresql://u:pw@127.0.0.1:1/$a5000?application_name=$a600"
)
for ci in "${longs[@]}"; do
    what="conninfo of ${#ci} bytes (${ci:0:40}...)"
    run check -t 2 --no-pool "$ci"
    expect_rc 1 "check, $what"
    expect_in out "^connect +FAILED" "check, $what: got as far as connecting"
    expect_not_in err "too small|cannot parse" "check, $what"

    run bench -T 1 -c 1 -P 0 --set connect_timeout=1s "$ci"
    expect_rc 1 "bench, $what"
    expect_in err "cannot connect" "bench, $what: got as far as connecting"

    run drill -B 100ms -O 100ms -A 100ms -i 50ms --set connect_timeout=1s -o r.html "$ci"
    expect_rc 1 "drill, $what"
    expect_in err "cannot connect through the relay" "drill, $what: got as far as connecting"
done
# check shows the whole value (nothing cut off), password masked
run check -t 2 --no-pool "$CLOSED application_name=$a5000 password=pw"
expect_in out "^database .*application_name=$a5000( |$)" "check shows a 5000-byte value whole"
expect_in out "^database .*password=\*{8}" "check masks the password next to a long value"
run check -t 2 --no-pool "$CLOSED application_name='$q700'"
grep -Fq -- "application_name='$q700'" "$work/out" ||
    fail "check does not show a value of 700 quotes whole: $(head -c 200 "$work/out")"

echo "cli_args: $checked invocations, $failed failed"
[ "$failed" -eq 0 ]
