#!/usr/bin/env bash
# consumer-check.sh - another project can use dbpool (tests/consumer/), built
# three ways in temp dirs:
#   1. add_subdirectory() of this source tree (what FetchContent does): only
#      the library is built, and its configure finds neither cmocka nor any
#      other test/tool dependency (checked in the CMake cache);
#   2. find_package(dbpool) against a library-only install into a temp prefix;
#   3. cc + `pkg-config --cflags --libs dbpool` against the same install.
# Each consumer is run (no server needed). Needs cmake, cc, pkg-config, libpq.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/dbpool-consumer-XXXXXX)
trap 'rm -rf "$work"' EXIT
jobs=${JOBS:-2}

step() { echo "consumer-check: $*"; }
quiet() { # quiet LOG CMD...: run, show the log only on failure
    local log=$1
    shift
    "$@" >"$log" 2>&1 || { tail -n 60 "$log"; echo "consumer-check: failed: $*" >&2; exit 1; }
}

step "1. add_subdirectory (embedded: library only)"
quiet "$work/sub-configure.log" cmake -S "$repo/tests/consumer" -B "$work/sub" \
    -DDBPOOL_SOURCE_DIR="$repo" -DDBPOOL_WERROR=ON
if grep -Eq '^[A-Za-z_]*(CMOCKA|TIDY|VALGRIND|NM_PROGRAM)[A-Za-z_]*[:=]' "$work/sub/CMakeCache.txt"; then
    echo "consumer-check: the embedded build looked for a test/tool dependency:" >&2
    grep -E '^[A-Za-z_]*(CMOCKA|TIDY|VALGRIND|NM_PROGRAM)' "$work/sub/CMakeCache.txt" >&2
    exit 1
fi
quiet "$work/sub-build.log" cmake --build "$work/sub" -j "$jobs"
for d in bin tests examples bench fuzz; do
    [ ! -e "$work/sub/dbpool/$d" ] || { echo "consumer-check: the embedded build made dbpool/$d/" >&2; exit 1; }
done
"$work/sub/consumer"
"$work/sub/consumer_static"

step "2. library-only install + find_package(dbpool)"
quiet "$work/lib-configure.log" cmake -S "$repo" -B "$work/lib" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDBPOOL_WERROR=ON -DDBPOOL_BUILD_TESTS=OFF -DDBPOOL_BUILD_TOOLS=OFF \
    -DDBPOOL_BUILD_EXAMPLES=OFF -DCMAKE_INSTALL_PREFIX="$work/prefix"
quiet "$work/lib-build.log" cmake --build "$work/lib" -j "$jobs"
quiet "$work/lib-install.log" cmake --install "$work/lib"
quiet "$work/pkg-configure.log" cmake -S "$repo/tests/consumer" -B "$work/pkg" \
    -DCMAKE_PREFIX_PATH="$work/prefix"
quiet "$work/pkg-build.log" cmake --build "$work/pkg" -j "$jobs"
"$work/pkg/consumer"
"$work/pkg/consumer_static"

step "3. pkg-config dbpool"
pcdir=$(dirname "$(find "$work/prefix" -name dbpool.pc | head -n 1)")
libdir=$(dirname "$pcdir")
export PKG_CONFIG_PATH="$pcdir"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer-pc" "$repo/tests/consumer/consumer.c" \
    $(pkg-config --cflags --libs dbpool)
LD_LIBRARY_PATH="$libdir" "$work/consumer-pc"
[ "$(pkg-config --modversion dbpool)" = "$(LD_LIBRARY_PATH="$libdir" "$work/consumer-pc" | sed 's/.*dbpool \([0-9.]*\),.*/\1/')" ] ||
    { echo "consumer-check: dbpool.pc's version differs from the library's" >&2; exit 1; }
step "ok"
