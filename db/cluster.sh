#!/usr/bin/env bash
# db/cluster.sh: the project-local PostgreSQL cluster.
#
#   db/cluster.sh up       start it (initdb on first use); idempotent
#   db/cluster.sh down     stop it; idempotent
#   db/cluster.sh status   say which server is in use and whether it answers
#   db/cluster.sh env      print export lines for PGHOST, PGPORT, PGUSER,
#                          B2B_OLTP_DSN, B2B_OLAP_DSN (eval "$(make -s env)")
#   db/cluster.sh pgtap    make sure the pgTAP extension is installable
#
# Packages are installed before the server starts, never under it: installing
# postgresql-NN-pgtap can upgrade postgresql-NN, and a server still running the
# old binary then fails to load its libraries ("undefined symbol"). `up`
# installs first, and restarts a running server whose binary changed since it
# started (recorded in $STATE/server.stamp), saying so in one line.
#
# When PGHOST (other than this cluster's socket) or B2B_OLTP_DSN/B2B_OLAP_DSN
# are set, that server is used instead and no cluster is started.
# As root the server runs as the `postgres` OS user (initdb refuses root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=db/common.sh
. "$ROOT/db/common.sh"
PORT=${B2B_PGPORT:-54329}
SUPERUSER=postgres
OLTP_DB=b2b_sales
OLAP_DB=b2b_sales_olap

die() { echo "cluster: $*" >&2; exit 1; }
note() { echo "cluster: $*" >&2; }

find_bindir() {
    local d
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        [ -x "$d/initdb" ] && { echo "$d"; return; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
    echo ""
}

BIN=$(find_bindir)
require_bin() {
    [ -n "$BIN" ] && [ -x "$BIN/initdb" ] || die "PostgreSQL server binaries (15 or newer) not found.
  Install them with:  apt-get install -y postgresql-15 postgresql-contrib
  or point PG_BIN at the directory holding initdb and pg_ctl."
    local ver
    ver=$("$BIN/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')
    [ "$ver" -ge 15 ] || die "PostgreSQL $ver found in $BIN; version 15 or newer is needed."
}

# Where the data lives: .pgdata in the checkout, or under /tmp (db/common.sh state_dir).
STATE="$ROOT/.pgdata"
resolve_state() { STATE=$(state_dir "$ROOT/.pgdata" b2bdwh); }

external() {
    # A DSN that names a host (or is a URI) points elsewhere; one that only
    # names a database follows PGHOST.
    case "${B2B_OLTP_DSN:-}${B2B_OLAP_DSN:-}" in *host=*|*://*) return 0 ;; esac
    if [ -n "${PGHOST:-}" ] && [ "$PGHOST" != "$(local_socket_dir)" ]; then return 0; fi
    return 1
}

local_socket_dir() {
    local s="$ROOT/.pgdata"
    [ -L "$s" ] && s=$(readlink -f "$s")
    echo "$s/run"
}

cmd_env() {
    if external; then
        echo "export PGHOST='${PGHOST:-}' PGPORT='${PGPORT:-5432}' PGUSER='${PGUSER:-$(id -un)}'"
        echo "export B2B_OLTP_DSN='${B2B_OLTP_DSN:-dbname=$OLTP_DB}' B2B_OLAP_DSN='${B2B_OLAP_DSN:-dbname=$OLAP_DB}'"
    else
        resolve_state
        echo "export PGHOST='$STATE/run' PGPORT='$PORT' PGUSER='$SUPERUSER'"
        echo "export B2B_OLTP_DSN='dbname=$OLTP_DB' B2B_OLAP_DSN='dbname=$OLAP_DB'"
    fi
}

running() { as_owner "$BIN/pg_ctl" -D "$STATE/data" status >/dev/null 2>&1; }

# An existing cluster is run by the binaries of its own major version (when PG_BIN
# does not say otherwise), even after a newer major is installed beside them.
pin_bindir() {
    [ -z "${PG_BIN:-}" ] && [ -f "$STATE/data/PG_VERSION" ] || return 0
    local major
    major=$(cat "$STATE/data/PG_VERSION")
    if [ -x "/usr/lib/postgresql/$major/bin/pg_ctl" ]; then BIN="/usr/lib/postgresql/$major/bin"; fi
}

# What the server binary is: its version, and the file (path, inode, change time,
# size; a package upgrade writes a new file, so the inode and change time change).
binary_stamp() {
    echo "$("$BIN/postgres" --version) | $(readlink -f "$BIN/postgres")" \
        "$(stat -L -c 'inode %i ctime %Z size %s' "$BIN/postgres")"
}

# The running postmaster: its pid and start time (epoch), from postmaster.pid.
postmaster_id() { sed -n '1p;3p' "$STATE/data/postmaster.pid" 2>/dev/null | tr '\n' ' '; }

record_stamp() {
    { postmaster_id; echo; binary_stamp; } >"$STATE/server.stamp"
}

# Why the running server must restart (its binary changed since it started), or
# nothing. A server that this script did not start (no stamp for it) is compared
# by the binary's change time against the postmaster's start time.
stale_reason() {
    local stamp="$STATE/server.stamp" now was started changed
    now=$(binary_stamp)
    if [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$(postmaster_id)" ]; then
        was=$(sed -n 2p "$stamp")
        [ "$was" = "$now" ] && return 0
        if [ "${was%% | *}" != "${now%% | *}" ]; then
            was=${was%% | *} now=${now%% | *}
            echo "$BIN/postgres changed under the running server" \
                "(${was#postgres (PostgreSQL) } -> ${now#postgres (PostgreSQL) })"
        else
            echo "$BIN/postgres was replaced since the server started (${was#* | } -> ${now#* | })"
        fi
        return 0
    fi
    started=$(sed -n 3p "$STATE/data/postmaster.pid" 2>/dev/null)
    changed=$(stat -L -c %Z "$BIN/postgres")
    if [ -n "$started" ] && [ "$changed" -gt "$started" ]; then
        echo "$BIN/postgres changed at $(date -d "@$changed" '+%F %T'), after the server started"
        return 0
    fi
    record_stamp
}

start_server() {
    as_owner "$BIN/pg_ctl" -D "$STATE/data" -l "$STATE/postgres.log" -w -t 60 start >/dev/null \
        || { tail -20 "$STATE/postgres.log" >&2; die "the server did not start; see $STATE/postgres.log"; }
    record_stamp
}

cmd_up() {
    if external; then
        note "using the server at PGHOST=${PGHOST:-} (no local cluster started)"
        return
    fi
    resolve_state
    pin_bindir
    require_bin
    mkdir -p "$STATE"
    [ "$(id -u)" = 0 ] && chown postgres: "$STATE"
    # Install first, start after: a package may upgrade the server's binaries.
    # Only the tests need pgTAP: without it (and without root to install it) the
    # cluster still comes up, with the way to install it said.
    ( cmd_pgtap ) || note "the tests will need pgTAP (make test); everything else works without it"
    if [ ! -f "$STATE/data/PG_VERSION" ]; then
        note "initialising a cluster in $STATE/data"
        as_owner mkdir -p "$STATE/run"
        as_owner "$BIN/initdb" -D "$STATE/data" -U "$SUPERUSER" --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 \
            || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
        as_owner tee -a "$STATE/data/postgresql.conf" >/dev/null <<CONF

# b2bdwh: project-local cluster, reachable only through its Unix socket.
listen_addresses = ''
port = $PORT
unix_socket_directories = '$STATE/run'
shared_buffers = 512MB
work_mem = 64MB
maintenance_work_mem = 512MB
max_wal_size = 8GB
checkpoint_timeout = 15min
shared_preload_libraries = 'pg_stat_statements'
max_connections = 200
log_min_messages = warning
CONF
    fi
    local reason
    if running; then
        reason=$(stale_reason)
        if [ -n "$reason" ]; then
            as_owner "$BIN/pg_ctl" -D "$STATE/data" -m fast -w -t 60 stop >/dev/null
            start_server
            note "restarted: $reason (socket $STATE/run, port $PORT)"
        else
            note "already running (socket $STATE/run, port $PORT)"
        fi
    else
        start_server
        note "started (socket $STATE/run, port $PORT)"
    fi
}

cmd_down() {
    if external; then note "external server in use; nothing to stop"; return; fi
    resolve_state
    pin_bindir
    require_bin
    if [ -f "$STATE/data/PG_VERSION" ] && running; then
        as_owner "$BIN/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null
        rm -f "$STATE/server.stamp"
        note "stopped"
    else
        note "not running"
    fi
}

cmd_status() {
    if external; then note "external server: PGHOST=${PGHOST:-} PGPORT=${PGPORT:-}"; fi
    eval "$(cmd_env)"
    if "${BIN:-/usr/bin}/pg_isready" -q 2>/dev/null || pg_isready -q 2>/dev/null; then
        note "server at $PGHOST:$PGPORT answers"
    else
        note "server at $PGHOST:$PGPORT does not answer"; exit 1
    fi
}

# pgTAP: the Debian package matching the server's major version.
cmd_pgtap() {
    external && return 0
    pin_bindir
    require_bin
    local ver share
    ver=$("$BIN/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')
    share=$("$BIN/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$ver")
    if [ -f "$share/extension/pgtap.control" ] && command -v pg_prove >/dev/null; then return; fi
    local cmd="apt-get install -y postgresql-$ver-pgtap pgtap"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        note "installing pgTAP: $cmd"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive $cmd -qq; } >/dev/null \
            || die "could not install pgTAP; run: $cmd"
    else
        die "pgTAP is not installed (the tests need it). Install it with:  sudo $cmd"
    fi
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    status) cmd_status ;;
    pgtap) cmd_pgtap ;;
    *) echo "usage: db/cluster.sh up|down|status|env|pgtap" >&2; exit 2 ;;
esac
