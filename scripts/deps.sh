#!/usr/bin/env bash
# deps.sh - make sure the Debian packages dbpool needs are installed.
# All present: exit 0 quietly. Missing and root: apt-get install them.
# Missing and not root: say which and how to install them, exit 1.
set -euo pipefail

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()

# A compiler and make: build-essential, or at least gcc + make.
if ! installed build-essential && ! { installed gcc && installed make; }; then
    missing+=(build-essential)
fi
# clang + its sanitizer/libFuzzer runtimes (libclang-rt-dev): `make fuzz`;
# clang-tidy / clang-format: the style checks; jq: the tests check every
# --json output of the CLI with it; prometheus: its promtool checks the
# metrics page (CTest it_metrics).
# libuv1-dev / libevent-dev: the event-loop adapters' examples and their
# test (it_pg_async_examples; skipped where missing, but CI has them).
for pkg in cmake pkg-config libpq-dev libcmocka-dev pgbouncer valgrind \
           clang libclang-rt-dev clang-tidy clang-format jq prometheus \
           libuv1-dev libevent-dev; do
    installed "$pkg" || missing+=("$pkg")
done
# The server (initdb/pg_ctl in /usr/lib/postgresql/*/bin), from any postgresql-NN.
if ! installed postgresql && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    missing+=(postgresql)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
    echo "deps.sh: install them with:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
install_cmd=(apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}")
if ! "${install_cmd[@]}" </dev/null >&2; then
    echo "deps.sh: install failed; running apt-get update and retrying" >&2
    apt-get update </dev/null >&2
    "${install_cmd[@]}" </dev/null >&2
fi
