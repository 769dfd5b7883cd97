#!/usr/bin/env bash
# db/citus.sh: a local Citus cluster, a coordinator and two workers, for the
# warehouse distributed (make citus, make test-citus).
#
#   db/citus.sh build    build and install Citus from the source tree in CITUS_SRC
#                        (when it is not installed yet, or CITUS_SRC holds another
#                        version); needs root or write access to PostgreSQL's
#                        library directory
#   db/citus.sh up       start the three servers (initdb on first use); idempotent
#   db/citus.sh down     stop them; idempotent
#   db/citus.sh status   say whether each answers
#   db/citus.sh env      export lines: PGHOST/PGPORT of the coordinator, the DSNs, and
#                        B2B_CITUS_WORKERS, which makes `b2bdwh migrate` turn each new
#                        warehouse database into a Citus one with these workers
#   db/citus.sh available   exit 0 when Citus can be loaded by this PostgreSQL
#
# The source database (b2b_sales) lives on the coordinator's server as a plain
# database: change capture needs one server's transaction ids (docs/scaling.md).
# Nodes talk over TCP on 127.0.0.1 with trust authentication, so the cluster is
# for one machine's tests and trials, not for a network.
#
# Citus is not in the package registries this project uses; its source is public
# (github.com/citusdata/citus). v13.2.2 is the last release line for PostgreSQL 15.
# Against current PostgreSQL 15 minor releases its `pg_version_compat.h` declares a
# static have_createdb_privilege() that PostgreSQL's commands/dbcommands.h now
# declares too; `build` renames Citus's copy in its build directory (never in
# CITUS_SRC) when the two clash.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=db/common.sh
. "$ROOT/db/common.sh"
BASE_PORT=${B2B_CITUS_PORT:-54340}
NODES=(coordinator worker1 worker2)
SUPERUSER=postgres
OLTP_DB=b2b_sales
OLAP_DB=b2b_sales_olap

die() { echo "citus: $*" >&2; exit 1; }
note() { echo "citus: $*" >&2; }

BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$BIN/pg_ctl" ] || die "PostgreSQL 15 server binaries not found in $BIN (set PG_BIN)"
PG_CONFIG="$BIN/pg_config"
LIBDIR=$("$PG_CONFIG" --pkglibdir)
SHAREDIR=$("$PG_CONFIG" --sharedir)

# Where the three data directories live: .citus in the checkout, or under /tmp
# (db/common.sh state_dir).
STATE="$ROOT/.citus"
resolve_state() { STATE=$(state_dir "$ROOT/.citus" b2bdwh-citus); }

port_of() {
    local i
    for i in "${!NODES[@]}"; do [ "${NODES[$i]}" = "$1" ] && { echo $((BASE_PORT + i)); return; }; done
}

installed_version() {
    [ -f "$SHAREDIR/extension/citus.control" ] && [ -f "$LIBDIR/citus.so" ] || return 0
    sed -n "s/^default_version = '\(.*\)'/\1/p" "$SHAREDIR/extension/citus.control"
}

cmd_available() { [ -n "$(installed_version)" ]; }

# The version a source tree builds: AC_INIT([Citus], [13.2.2], ...) in configure.ac.
tree_version() {
    sed -n 's/^AC_INIT(\[Citus\], \[\([0-9.]*\)[^]]*\].*/\1/p' "$1/configure.ac" | head -1
}

cmd_build() {
    local src=${CITUS_SRC:-} have want build
    have=$(installed_version)
    if [ -z "$src" ]; then
        [ -n "$have" ] && { note "Citus $have is installed"; return; }
        die "Citus is not installed. Point CITUS_SRC at its source tree (github.com/citusdata/citus,
  tag v13.2.2 for PostgreSQL 15), e.g.  make citus CITUS_SRC=\$HOME/src/citus"
    fi
    [ -f "$src/configure.ac" ] || die "CITUS_SRC=$src is not a Citus source tree (no configure.ac)"
    want=$(tree_version "$src")
    if [ -n "$have" ] && [ "${have%%-*}" = "${want%.*}" ] && [ -f "$STATE/build/.installed-$want" ]; then
        note "Citus $want from $src is installed"; return
    fi
    build="$STATE/build"
    note "building Citus $want from $src in $build (about 90 s on 2 cores)"
    rm -rf "$build" && mkdir -p "$build"
    cp -a "$src/." "$build/"
    local compat="$build/src/include/pg_version_compat.h"
    if grep -q 'have_createdb_privilege' "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h" \
        && grep -q '^have_createdb_privilege(void)' "$compat" \
        && ! grep -q 'define have_createdb_privilege citus_' "$compat"; then
        note "PostgreSQL declares have_createdb_privilege(); renaming Citus's static copy"
        python3 - "$compat" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
static = "static inline bool\nhave_createdb_privilege(void)"
define = "#define have_createdb_privilege citus_have_createdb_privilege\n"
open(path, "w").write(text.replace(static, define + static, 1))
PY
    fi
    ( cd "$build" \
        && ./configure PG_CONFIG="$PG_CONFIG" >"$build/configure.out" 2>&1 \
        && make -j"$(nproc)" with_llvm=no >"$build/make.out" 2>&1 \
        && make install with_llvm=no >"$build/install.out" 2>&1 ) \
        || die "the build failed; see the last lines of $build/configure.out, make.out or install.out"
    touch "$build/.installed-$want"
    note "Citus $(installed_version) installed into $LIBDIR"
}

running() { as_owner "$BIN/pg_ctl" -D "$STATE/$1/data" status >/dev/null 2>&1; }

psql_node() {
    local node=$1; shift
    "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port_of "$node")" -U "$SUPERUSER" "$@"
}

cmd_up() {
    cmd_available || die "Citus is not installed for $BIN: run  make citus CITUS_SRC=<citus source tree>"
    resolve_state
    mkdir -p "$STATE"
    [ "$(id -u)" = 0 ] && chown postgres: "$STATE"
    local node port
    for node in "${NODES[@]}"; do
        port=$(port_of "$node")
        if [ ! -f "$STATE/$node/data/PG_VERSION" ]; then
            note "initialising $node in $STATE/$node/data"
            as_owner mkdir -p "$STATE/$node/run"
            as_owner "$BIN/initdb" -D "$STATE/$node/data" -U "$SUPERUSER" --auth=trust \
                --encoding=UTF8 --locale=C.UTF-8 >"$STATE/$node/initdb.log" 2>&1 \
                || { cat "$STATE/$node/initdb.log" >&2; die "initdb failed"; }
            as_owner tee -a "$STATE/$node/data/postgresql.conf" >/dev/null <<CONF

# b2bdwh: $node of the local Citus cluster (db/citus.sh); nodes talk on 127.0.0.1.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$STATE/$node/run'
shared_preload_libraries = 'citus,pg_stat_statements'
max_prepared_transactions = 200
max_connections = 300
shared_buffers = 256MB
work_mem = 32MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
log_min_messages = warning
CONF
        fi
        if running "$node"; then
            note "$node already running (port $port)"
        else
            as_owner "$BIN/pg_ctl" -D "$STATE/$node/data" -l "$STATE/$node/postgres.log" -w -t 60 start >/dev/null \
                || { tail -20 "$STATE/$node/postgres.log" >&2; die "$node did not start; see $STATE/$node/postgres.log"; }
            note "$node started (127.0.0.1:$port)"
        fi
    done
}

cmd_down() {
    resolve_state
    local node
    for node in "${NODES[@]}"; do
        if [ -f "$STATE/$node/data/PG_VERSION" ] && running "$node"; then
            as_owner "$BIN/pg_ctl" -D "$STATE/$node/data" -m fast -w stop >/dev/null
            note "$node stopped"
        fi
    done
}

cmd_status() {
    local node port bad=0
    for node in "${NODES[@]}"; do
        port=$(port_of "$node")
        if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
            note "$node at 127.0.0.1:$port answers"
        else
            note "$node at 127.0.0.1:$port does not answer"; bad=1
        fi
    done
    return $bad
}

cmd_env() {
    resolve_state
    local workers="127.0.0.1:$(port_of worker1),127.0.0.1:$(port_of worker2)"
    echo "export PGHOST='$STATE/coordinator/run' PGPORT='$(port_of coordinator)' PGUSER='$SUPERUSER'"
    echo "export B2B_OLTP_DSN='dbname=$OLTP_DB' B2B_OLAP_DSN='dbname=$OLAP_DB'"
    echo "export B2B_CITUS_WORKERS='$workers'"
}

case "${1:-}" in
    build) resolve_state; cmd_build ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    available) cmd_available ;;
    *) echo "usage: db/citus.sh build|up|down|status|env|available" >&2; exit 2 ;;
esac
