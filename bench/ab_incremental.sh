#!/usr/bin/env bash
# bench/ab_incremental.sh REV [SCALE] [ROUNDS] [CHANGES]
#
# Side-by-side incremental updates: the code at git revision REV against the working tree,
# on two copies of one generated source, in interleaved rounds (the order alternates), so
# that both see the same machine at the same time. Single runs on a shared 2-core machine
# vary by more than many a change costs; docs/benchmarks.md (issue 11) used this.
#
# Each round runs `b2bdwh simulate --changes CHANGES --seed N` on both sources (the same
# changes) and times `CALL etl.run_incremental_update()` on each warehouse, printing the
# run and its slowest steps. Defaults: SCALE 1000, 9 rounds, 10,000 changes. Needs the
# project's .venv and cluster (make venv up); leaves databases ab_{src,olap}_{old,new}.
# AB_REUSE=1 skips the set-up and runs more rounds on the databases a run left (SCALE is
# then what they hold; AB_SEED, default 100, moves the rounds' seeds off the ones used).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REV=${1:?usage: bench/ab_incremental.sh REV [SCALE] [ROUNDS] [CHANGES]}
SCALE=${2:-1000}
ROUNDS=${3:-9}
CHANGES=${4:-10000}
OLD_TREE=$(mktemp -d /tmp/b2bdwh-ab-XXXXXX)
trap 'git -C "$ROOT" worktree remove --force "$OLD_TREE" >/dev/null 2>&1 || true' EXIT

eval "$(bash "$ROOT/db/cluster.sh" env)"
PY="$ROOT/.venv/bin/python"
new() { "$ROOT/.venv/bin/b2bdwh" "$@"; }
old() { (cd "$OLD_TREE" && PYTHONPATH="$OLD_TREE/src" "$PY" -m b2bdwh "$@"); }
admin() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -d postgres -c "$1"; }
timed_call() {  # database, statement: prints the seconds it took
    local t0 t1
    t0=$(date +%s.%N)
    psql -X -q -d "$1" -c "$2" >/dev/null 2>&1
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
if [ "${AB_REUSE:-0}" != 1 ]; then
    git -C "$ROOT" worktree add -q --detach "$OLD_TREE" "$REV"

    for db in ab_src_new ab_src_old ab_olap_new ab_olap_old; do
        admin "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    done
    admin "CREATE DATABASE ab_src_new"
    B2B_OLTP_DSN=dbname=ab_src_new B2B_OLAP_DSN=dbname=ab_olap_new new migrate --target oltp >/dev/null
    echo "generate, scale $SCALE"
    B2B_OLTP_DSN=dbname=ab_src_new new generate --scale "$SCALE" >/dev/null
    admin "CREATE DATABASE ab_src_old TEMPLATE ab_src_new"
    admin "CREATE DATABASE ab_olap_new"
    admin "CREATE DATABASE ab_olap_old"
    B2B_OLTP_DSN=dbname=ab_src_new B2B_OLAP_DSN=dbname=ab_olap_new new migrate --target olap >/dev/null
    B2B_OLTP_DSN=dbname=ab_src_old B2B_OLAP_DSN=dbname=ab_olap_old old migrate --target olap >/dev/null

    for v in new old; do
        echo "initial load ($v): $(timed_call "ab_olap_$v" 'CALL etl.run_initial_load()') s"
        psql -X -q -d "ab_olap_$v" -c 'VACUUM (ANALYZE)'
    done
fi
for i in $(seq 1 "$ROUNDS"); do
    order="new old"
    [ $((i % 2)) = 0 ] && order="old new"
    for v in $order; do
        B2B_OLTP_DSN="dbname=ab_src_$v" new simulate --changes "$CHANGES" --seed $((${AB_SEED:-100} + i)) >/dev/null
        seconds=$(timed_call "ab_olap_$v" 'CALL etl.run_incremental_update()')
        steps=$(psql -X -q -At -d "ab_olap_$v" -c "
            SELECT string_agg(step || ' ' || round(extract(epoch FROM finished_at - started_at)::numeric, 2),
                              ', ' ORDER BY finished_at - started_at DESC)
              FROM (SELECT * FROM etl.loading_metadata
                     WHERE run_id = (SELECT max(run_id) FROM etl.run)
                     ORDER BY finished_at - started_at DESC LIMIT 3) AS m")
        echo "round $i $v: $seconds s ($steps)"
        echo "$v $seconds" >>"$OLD_TREE.times"
    done
done
for v in old new; do  # the median of the rounds, each side
    awk -v v="$v" '$1 == v { print $2 }' "$OLD_TREE.times" | sort -n |
        awk -v v="$v" '{ t[NR] = $1 } END { m = NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
                         printf "median of %d rounds (%s): %.2f s\n", NR, v, m }'
done
rm -f "$OLD_TREE.times"
