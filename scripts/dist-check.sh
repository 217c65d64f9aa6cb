#!/usr/bin/env bash
# dist-check.sh [TARBALL] - the source tarball builds offline.
# Without an argument makes one (make dist, i.e. HEAD) in a temp dir. Unpacks
# it, checks it carries the licence, changelog and man pages, then configures,
# builds (library, CLI, examples; tests off, to stay fast) and installs it
# into a temp prefix with the network cut off (unshare -n when it is
# available, i.e. as root), and runs the installed `dbpool --version`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d /tmp/dbpool-dist-check-XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ $# -ge 1 ]; then
    tarball=$(realpath "$1")
else
    make -s dist DIST_DIR="$work" >&2
    tarball=$(ls "$work"/dbpool-*.tar.gz)
fi
version=$(basename "$tarball" .tar.gz)
version=${version#dbpool-}
echo "dist-check: $tarball (version $version)"

tar -xzf "$tarball" -C "$work"
src="$work/dbpool-$version"
[ -d "$src" ] || { echo "dist-check: the tarball does not unpack to dbpool-$version/" >&2; exit 1; }
for f in LICENSE CHANGELOG.md README.md CMakeLists.txt include/dbpool.h man/dbpool.1 man/dbpool.3; do
    [ -f "$src/$f" ] || { echo "dist-check: $f missing from the tarball" >&2; exit 1; }
done
[ ! -e "$src/.git" ] || { echo "dist-check: the tarball contains .git" >&2; exit 1; }

offline=()
if unshare -n true 2>/dev/null; then
    offline=(unshare -n)
    echo "dist-check: configure and build without a network (unshare -n)"
else
    echo "dist-check: unshare -n not available (not root?): building with the network on"
fi
"${offline[@]}" cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDBPOOL_WERROR=ON -DBUILD_TESTING=OFF -DCMAKE_INSTALL_PREFIX="$work/prefix" >"$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log"; echo "dist-check: configure failed" >&2; exit 1; }
"${offline[@]}" cmake --build "$work/build" -j 2 >"$work/build.log" 2>&1 ||
    { tail -n 60 "$work/build.log"; echo "dist-check: build failed" >&2; exit 1; }
cmake --install "$work/build" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; echo "dist-check: install failed" >&2; exit 1; }

for page in man1/dbpool.1 man3/dbpool.3; do
    [ -n "$(find "$work/prefix" -path "*/man/$page")" ] || { echo "dist-check: $page not installed" >&2; exit 1; }
done
out=$("$work/prefix/bin/dbpool" --version)
case "$out" in
"dbpool $version "*) ;;
*) echo "dist-check: installed dbpool --version says '$out', want dbpool $version" >&2; exit 1 ;;
esac
echo "dist-check: ok: $out"
