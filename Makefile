# Thin wrapper around CMake. The real build is CMakeLists.txt.
#   make / make build   install missing Debian packages (as root), configure, build (build/)
#   make test           build, then run every test (unit + integration) with CTest
#   make test-asan      the same under ASan+UBSan (build-asan/)
#   make test-tsan      the same under TSan (build-tsan/)
#   make build-release  a Release build (-O3, build-release/), no tests run: gcc warns
#                       about more at -O3, and WERROR=ON makes that fail the build
#   make demo           the tour (scripts/demo-tour.sh) against $DATABASE_URL, or a throwaway PostgreSQL
#   make valgrind       the unit tests under valgrind memcheck (plain build in build/)
#   make fuzz           the libFuzzer targets (clang, build-fuzz/), each run for
#                       FUZZ_SECONDS (default 30) on a copy of its seed corpus
#   make bench          every benchmark against its baselines, ratios printed
#                       (bench/compare.sh; DATABASE_URL, SUITES, DURATION, REPS)
#   make dist           dbpool-VERSION.tar.gz of the committed tree (git archive HEAD) in DIST_DIR
#   make dist-check     make dist, then configure and build the tarball offline (scripts/dist-check.sh)
#   make consumer-check tests/consumer built with add_subdirectory (library only), and with
#                       find_package / pkg-config against an install in a temp prefix
#   make deb-check      Debian packages (debian/) built, lintian-checked, consumer built against them
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

.PHONY: all build deps build-asan build-tsan build-release test test-asan test-tsan demo bench clean \
        dist dist-check consumer-check deb-check

# The version, read from the one place it is written (include/dbpool.h).
VERSION    := $(shell sed -n 's/^\#define DBPOOL_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9][0-9]*\)$$/\2/p' \
                  include/dbpool.h | paste -sd.)
DIST_DIR   ?= .

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

# Always Release, whatever BUILD_TYPE says: that is the point of it.
build-release: deps
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DDBPOOL_WERROR=$(WERROR) \
	    -DDBPOOL_SANITIZE= $(CMAKE_ARGS)
	cmake --build build-release -j $(JOBS)

test: build
	ctest --test-dir build $(CTEST_ARGS)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build-asan $(CTEST_ARGS)

test-tsan: build-tsan
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	ctest --test-dir build-tsan $(CTEST_ARGS)

# The tour (scripts/demo-tour.sh): the demo program, bench vs --direct, an
# overload burst, an outage drill. Uses $DATABASE_URL if set; otherwise starts
# a throwaway server and always stops it.
demo: build
	@if [ ! -x "$(DEMO)" ]; then echo "make demo: $(DEMO) was not built (examples/demo.c missing?)" >&2; exit 1; fi
	@if [ -n "$$DATABASE_URL" ]; then \
	    exec bash scripts/demo-tour.sh build "$$DATABASE_URL"; \
	fi; \
	dir=$$(mktemp -d /tmp/dbpool-demo-XXXXXX) || exit 1; \
	trap 'bash scripts/pg-throwaway.sh stop "$$dir"' EXIT; \
	trap 'exit 130' INT TERM HUP; \
	conninfo=$$(bash scripts/pg-throwaway.sh start "$$dir") || exit 1; \
	echo "make demo: throwaway PostgreSQL: $$conninfo" >&2; \
	bash scripts/demo-tour.sh build "$$conninfo"

clean:
	rm -rf build build-asan build-tsan build-release build-fuzz

# The source tarball: what is committed at HEAD (uncommitted changes are not
# in it; a note says so), under dbpool-VERSION/. Nothing in the build
# downloads anything, so it builds offline (make dist-check proves it).
dist:
	@case "$(VERSION)" in [0-9]*.[0-9]*.[0-9]*) ;; *) echo "make dist: no version in include/dbpool.h" >&2; exit 1;; esac
	@if [ -n "$$(git status --porcelain --untracked-files=no)" ]; then \
	    echo "make dist: note: uncommitted changes are not in the tarball (it is HEAD)" >&2; fi
	git archive --format=tar.gz --prefix=dbpool-$(VERSION)/ -o $(DIST_DIR)/dbpool-$(VERSION).tar.gz HEAD
	@echo "make dist: $(DIST_DIR)/dbpool-$(VERSION).tar.gz"

dist-check:
	bash scripts/dist-check.sh

consumer-check:
	JOBS=$(JOBS) bash scripts/consumer-check.sh

# Not in .ci/run (installing debhelper + lintian takes minutes): .ci/deb runs it.
deb-check:
	bash scripts/deb-check.sh

# ---- issue #6: valgrind and fuzzing ----------------------------------------
VALGRIND     ?= valgrind -q --error-exitcode=1 --leak-check=full --num-callers=30
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= fuzz_config fuzz_conninfo

.PHONY: valgrind fuzz

# Every unit test CTest knows (label "unit") that is a program of its own,
# under memcheck. Output goes to build/valgrind/<test>.log, shown on failure.
valgrind: build
	@mkdir -p build/valgrind; \
	names=$$(ctest --test-dir build -L unit -N | sed -n 's/^ *Test *#[0-9]*: *//p'); \
	ran=0; failed=""; \
	for t in $$names; do \
	    [ -x "build/tests/$$t" ] || continue; \
	    ran=$$((ran + 1)); \
	    start=$$(date +%s); \
	    if (cd build/tests && timeout 900 $(VALGRIND) ./$$t) >build/valgrind/$$t.log 2>&1; then \
	        echo "valgrind $$t: ok ($$(( $$(date +%s) - start )) s)"; \
	    else \
	        echo "valgrind $$t: FAILED"; tail -n 80 build/valgrind/$$t.log; failed="$$failed $$t"; \
	    fi; \
	done; \
	if [ $$ran -eq 0 ]; then echo "make valgrind: no unit test programs found" >&2; exit 1; fi; \
	if [ -n "$$failed" ]; then echo "make valgrind: failed:$$failed" >&2; exit 1; fi

# libFuzzer needs clang. Each target runs on a scratch copy of its seed corpus
# (fuzz/corpus/<target>/, never modified); a crash leaves the input in
# build-fuzz/<target>-crash-* and fails the target.
fuzz: deps
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDBPOOL_WERROR=$(WERROR) \
	    -DDBPOOL_FUZZ=ON -DBUILD_TESTING=OFF -DDBPOOL_BUILD_EXAMPLES=OFF -DDBPOOL_BUILD_TOOLS=OFF \
	    $(CMAKE_ARGS)
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do \
	    corpus=build-fuzz/corpus/$$t; rm -rf $$corpus; mkdir -p $$corpus; \
	    cp fuzz/corpus/$$t/* $$corpus/; \
	    dict=""; [ -f fuzz/$$t.dict ] && dict="-dict=fuzz/$$t.dict"; \
	    echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	    if ! build-fuzz/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	            -artifact_prefix=build-fuzz/$$t- $$dict $$corpus >build-fuzz/$$t.log 2>&1; then \
	        tail -n 60 build-fuzz/$$t.log; echo "make fuzz: $$t failed (input: build-fuzz/$$t-*)" >&2; \
	        exit 1; \
	    fi; \
	    echo "fuzz $$t: $$(sed -n 's/^stat::number_of_executed_units: *//p' build-fuzz/$$t.log) executions, no crash"; \
	done

# Benchmarks report numbers; they are not tests (nothing here fails on speed).
bench: build
	BUILD_DIR=$(CURDIR)/build bash bench/compare.sh
