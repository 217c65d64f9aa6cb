#!/usr/bin/env bash
# deb-check.sh - the Debian packages (debian/: libdbpool0, libdbpool-dev,
# dbpool-tools) build from the committed tree with `dpkg-buildpackage -us -uc
# -b`, lintian finds no errors or warnings in them, and a consumer
# (tests/consumer/) compiles and runs against the packaged files, with
# pkg-config and with find_package. The packages are unpacked into a temp
# root (dpkg-deb -x), not installed, so the machine is left as it was;
# --install also installs them with apt-get and builds the consumer against
# the system (for a throwaway CI machine). As root, installs debhelper,
# lintian and dpkg-dev from Debian if missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
install=0
[ "${1:-}" = "--install" ] && install=1

need=()
for pkg in debhelper lintian dpkg-dev cmake pkg-config libpq-dev; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] ||
        need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deb-check: missing Debian packages: ${need[*]} (apt-get install them)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" </dev/null >&2 || {
        apt-get update </dev/null >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" </dev/null >&2
    }
fi

work=$(mktemp -d /tmp/dbpool-deb-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
git archive --format=tar HEAD | tar -x -C "$work/src"
[ -d "$work/src/debian" ] || { echo "deb-check: no debian/ in HEAD" >&2; exit 1; }

# debian/changelog names the version too: it must be the one in dbpool.h
want=$(sed -n 's/^#define DBPOOL_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9][0-9]*\)$/\2/p' include/dbpool.h | paste -sd.)
got=$(cd "$work/src" && dpkg-parsechangelog -S Version)
[ "${got%-*}" = "$want" ] ||
    { echo "deb-check: debian/changelog is at $got, include/dbpool.h at $want: add a changelog entry" >&2; exit 1; }

echo "deb-check: dpkg-buildpackage -us -uc -b"
(cd "$work/src" && dpkg-buildpackage -us -uc -b -j2) >"$work/build.log" 2>&1 ||
    { tail -n 80 "$work/build.log"; echo "deb-check: dpkg-buildpackage failed" >&2; exit 1; }
ls "$work"/*.deb

echo "deb-check: lintian"
changes=$(ls "$work"/*.changes)
# Not about the packages: dbpool is not (yet) in the Debian archive, so there
# is no ITP bug for the first changelog entry to close.
lrc=0
lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs --display-info \
    "$changes" >"$work/lintian.log" 2>&1 || lrc=$?
grep -v 'running with root privileges' "$work/lintian.log" || true
if [ $lrc -ne 0 ]; then
    echo "deb-check: lintian found errors or warnings" >&2
    exit 1
fi

echo "deb-check: the consumer against the unpacked packages"
root="$work/root"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$root"; done
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir="$root/usr/lib/$multiarch"
for f in "$libdir/libdbpool.so.0" "$libdir/libdbpool.a" "$libdir/pkgconfig/dbpool.pc" \
         "$libdir/cmake/dbpool/dbpoolConfig.cmake" "$root/usr/include/dbpool.h" \
         "$root/usr/bin/dbpool" "$root/usr/share/man/man1/dbpool.1.gz" \
         "$root/usr/share/man/man3/dbpool.3.gz"; do
    [ -e "$f" ] || { echo "deb-check: ${f#"$root"} is in no package" >&2; exit 1; }
done
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer-pc" "$repo/tests/consumer/consumer.c" \
    $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs dbpool)
LD_LIBRARY_PATH="$libdir" "$work/consumer-pc"
if ! { cmake -S "$repo/tests/consumer" -B "$work/cm" -DCMAKE_PREFIX_PATH="$root/usr" &&
        cmake --build "$work/cm"; } >"$work/cm.log" 2>&1; then
    cat "$work/cm.log"
    echo "deb-check: find_package against the packages failed" >&2
    exit 1
fi
"$work/cm/consumer"
"$work/cm/consumer_static"
LD_LIBRARY_PATH="$libdir" "$root/usr/bin/dbpool" --version

if [ $install -eq 1 ]; then
    echo "deb-check: apt-get install the packages, the consumer against the system"
    # --reinstall: a machine may hold an older build of the same version
    DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall --allow-downgrades "$work"/*.deb \
        </dev/null >&2
    # shellcheck disable=SC2046
    cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer-sys" "$repo/tests/consumer/consumer.c" \
        $(pkg-config --cflags --libs dbpool)
    "$work/consumer-sys"
    dbpool --version
    for page in /usr/share/man/man1/dbpool.1.gz /usr/share/man/man3/dbpool.3.gz; do
        [ -e "$page" ] || { echo "deb-check: $page not installed" >&2; exit 1; }
    done
fi
echo "deb-check: ok"
