#!/usr/bin/env bash
# layering.sh SRC_DIR - the library's arrows point down only
# (docs/architecture.md): src/core includes nothing from src/pg or
# src/tenants, src/pg nothing from src/tenants, manager.c and workers.c no
# pool header, and no library file anything from tools/, tests/ or bench/.
set -u
src=$1
bad=0
hdrs() { (cd "$src/$1" && ls *.h 2>/dev/null); }
check() { # files, forbidden headers, why
    local files=$1 forbidden=$2 why=$3
    for h in $forbidden; do
        hits=$(grep -ln "#include \"$h\"" $files 2>/dev/null)
        if [ -n "$hits" ]; then
            echo "layering: $hits include $h ($why)"
            bad=1
        fi
    done
}
check "$src/core/*.c $src/core/*.h" "$(hdrs pg) $(hdrs tenants) dbpool_pg.h dbpool_registry.h" "core uses neither pg nor tenants"
check "$src/pg/*.c $src/pg/*.h" "$(hdrs tenants) dbpool_registry.h" "pg does not use tenants"
check "$src/core/manager.c $src/core/manager.h $src/core/workers.c $src/core/workers.h" "pool.h slot.h config.h" "the manager knows no pool"
if grep -rnE '#include "[^"]*(tools|tests|bench)/' "$src"; then
    echo "layering: the library includes from tools/, tests/ or bench/"
    bad=1
fi
[ $bad -eq 0 ] && echo "layering: ok"
exit $bad
