# db/common.sh: what db/cluster.sh and db/citus.sh share. Sourced, not run; expects ROOT
# (the checkout).

# Run a command as the clusters' OS owner (from /, which it can always enter): as root,
# the `postgres` user (initdb refuses root).
as_owner() {
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# state_dir DIR NAME: where a cluster's data lives: DIR in the checkout; or, when root and
# the postgres user cannot reach the checkout, or the socket path would be too long for a
# Unix socket, /tmp/NAME-<hash of the checkout> with DIR a link to it. Prints the path.
state_dir() {
    local state=$1 alt
    alt="/tmp/$2-$(echo -n "$ROOT" | md5sum | cut -c1-10)"
    if [ -L "$state" ]; then readlink -f "$state"; return; fi
    if [ -d "$state" ]; then echo "$state"; return; fi
    local need_alt=0
    [ ${#state} -gt 80 ] && need_alt=1
    if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$ROOT"; then need_alt=1; fi
    if [ "$need_alt" = 1 ]; then
        mkdir -p "$alt"
        ln -sfn "$alt" "$state"
        echo "$alt"
    else
        echo "$state"
    fi
}
