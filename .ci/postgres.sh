# Sourced by .ci/run: a real PostgreSQL server from Debian's packages, started on loopback in a
# throw-away data directory, for the test that runs two tune workers on one study.
# Exports NNRECIPE_TEST_POSTGRES (a database URL); stopped when the sourcing shell exits.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/postgres" ]; then
    echo "ci: installing PostgreSQL from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
PGBIN="$(pg_bin)"
PGDATA="$(mktemp -d /tmp/nnrecipe-pg.XXXXXX)"
PGPORT="${NNRECIPE_PG_PORT:-55432}"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root
    chown postgres "$PGDATA"
    RUN_AS=(runuser -u postgres --)
fi
"${RUN_AS[@]}" "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
"${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-p $PGPORT -k $PGDATA -c listen_addresses=127.0.0.1" start >/dev/null
"${RUN_AS[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres nnrecipe_test
export NNRECIPE_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$PGPORT/nnrecipe_test"
trap '"${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1; rm -rf "$PGDATA"' EXIT
echo "ci: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT"
