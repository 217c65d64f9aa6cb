#!/usr/bin/env bash
# man_sync.sh DBPOOL MANDIR INCLUDEDIR - the man pages say what the program
# and the headers say:
#   - every command of `dbpool --help` has a section ".SS dbpool <command>" in
#     dbpool.1, and every option of `dbpool <command> --help` (short and
#     long) is in that section; every option `dbpool --help` names is in
#     dbpool.1;
#   - every public function of INCLUDEDIR/*.h (DBPOOL_API) is in dbpool.3, and
#     every function dbpool.3's synopsis declares exists;
#   - both pages carry the project's version (configured by CMake).
set -u

DBPOOL=${1:?usage: man_sync.sh DBPOOL MANDIR INCLUDEDIR [VERSION]}
MANDIR=${2:?}
INCDIR=${3:?}
VERSION=${4:-}
bad=0
fail() {
    echo "man_sync: $*" >&2
    bad=1
}

# roff source -> text to search: \- is -, font changes dropped
plain() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\(.[a-z]//g' "$1"; }
man1=$(plain "$MANDIR/dbpool.1")
man3=$(plain "$MANDIR/dbpool.3")
has_word() { # TEXT WORD
    grep -qE -- "(^|[^A-Za-z0-9_-])$2([^A-Za-z0-9_-]|$)" <<<"$1"
}
# options in help text: -x and --long-name at the start of a line or after ", "
options_of() {
    grep -E '^ +-' <<<"$1" | sed -E 's/^ +//; s/  .*$//' | grep -oE -- '--?[A-Za-z][A-Za-z-]*'
}

top=$("$DBPOOL" --help) || fail "dbpool --help failed"
commands=$(sed -n '/^commands:/,/^$/p' <<<"$top" | awk 'NR > 1 && NF {print $1}')
[ -n "$commands" ] || fail "no commands found in dbpool --help"
for opt in $(grep -oE -- '(^|[ (`])--?[A-Za-z][A-Za-z-]*' <<<"$top" | sed -E 's/^[ (`]//' | sort -u); do
    has_word "$man1" "$opt" || fail "dbpool.1 does not mention $opt (from dbpool --help)"
done
n=0
for cmd in $commands; do
    section=$(awk -v want=".SS dbpool $cmd" '
        $0 == want {on = 1; next}
        on && /^\.S[HS]/ {exit}
        on {print}' <<<"$man1")
    if [ -z "$section" ]; then
        fail "dbpool.1 has no section '.SS dbpool $cmd'"
        continue
    fi
    help=$("$DBPOOL" "$cmd" --help) || fail "dbpool $cmd --help failed"
    for opt in $(options_of "$help" | sort -u); do
        n=$((n + 1))
        has_word "$section" "$opt" || fail "dbpool.1, section dbpool $cmd: no $opt (from dbpool $cmd --help)"
    done
done
[ "$n" -gt 20 ] || fail "only $n command options found in the --help texts: parser out of date?"

funcs=$(for h in "$INCDIR"/*.h; do
    awk '/^DBPOOL_API/ {p = 1} p {printf "%s ", $0} p && /;/ {print ""; p = 0}' "$h"
done | grep -oE '\bdbpool_[a-z0-9_]+ *\(' | tr -d ' (' | sort -u)
[ "$(wc -w <<<"$funcs")" -gt 30 ] || fail "only $(wc -w <<<"$funcs") public functions found in $INCDIR"
for f in $funcs; do
    has_word "$man3" "$f" || fail "dbpool.3 does not document $f (public in $INCDIR)"
done
for f in $(sed -n '/^\.SH SYNOPSIS/,/^\.SH DESCRIPTION/p' <<<"$man3" | grep -oE '\bdbpool_[a-z0-9_]+\(' | tr -d '(' | sort -u); do
    grep -qx -- "$f" <<<"$funcs" || fail "dbpool.3 declares $f, which is not in $INCDIR/*.h"
done

if [ -n "$VERSION" ]; then
    for p in dbpool.1 dbpool.3; do
        grep -q "^\.TH .*\"dbpool $VERSION\"" "$MANDIR/$p" || fail "$p: .TH does not say dbpool $VERSION"
    done
fi
[ $bad -eq 0 ] && echo "man_sync: ok ($(wc -w <<<"$commands") commands, $n command options, $(wc -w <<<"$funcs") functions)"
exit $bad
