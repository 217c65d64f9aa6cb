# Thin wrapper around CMake. The real build is CMakeLists.txt.
#   make / make build   install missing Debian packages (as root), configure, build (build/)
#   make test           build, then run every test (unit + integration) with CTest
#   make test-asan      the same under ASan+UBSan (build-asan/)
#   make test-tsan      the same under TSan (build-tsan/)
#   make demo           run examples/demo against $DATABASE_URL, or a throwaway PostgreSQL
#   make clean
# Variables: WERROR=ON|OFF (default ON), BUILD_TYPE (default RelWithDebInfo),
#            JOBS (default: number of CPUs), CMAKE_ARGS (extra configure arguments).

MAKEFLAGS  += --no-print-directory

WERROR     ?= ON
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
CTEST_ARGS ?= --output-on-failure -j2 --timeout 600
DEMO       ?= build/examples/demo

configure = cmake -S . -B $(1) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DDBPOOL_WERROR=$(WERROR) \
            -DDBPOOL_SANITIZE=$(2) $(CMAKE_ARGS)

.PHONY: all build deps build-asan build-tsan test test-asan test-tsan demo clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(call configure,build,)
	cmake --build build -j $(JOBS)

build-asan: deps
	$(call configure,build-asan,address)
	cmake --build build-asan -j $(JOBS)

build-tsan: deps
	$(call configure,build-tsan,thread)
	cmake --build build-tsan -j $(JOBS)

test: build
	ctest --test-dir build $(CTEST_ARGS)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build-asan $(CTEST_ARGS)

test-tsan: build-tsan
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	ctest --test-dir build-tsan $(CTEST_ARGS)

# Uses $DATABASE_URL if set; otherwise starts a throwaway server and always stops it.
demo: build
	@if [ ! -x "$(DEMO)" ]; then echo "make demo: $(DEMO) was not built (examples/demo.c missing?)" >&2; exit 1; fi
	@if [ -n "$$DATABASE_URL" ]; then \
	    exec "$(DEMO)" "$$DATABASE_URL"; \
	fi; \
	dir=$$(mktemp -d /tmp/dbpool-demo-XXXXXX) || exit 1; \
	trap 'bash scripts/pg-throwaway.sh stop "$$dir"' EXIT; \
	trap 'exit 130' INT TERM HUP; \
	conninfo=$$(bash scripts/pg-throwaway.sh start "$$dir") || exit 1; \
	echo "make demo: throwaway PostgreSQL: $$conninfo" >&2; \
	"$(DEMO)" "$$conninfo"

clean:
	rm -rf build build-asan build-tsan
