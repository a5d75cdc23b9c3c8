#!/usr/bin/env bash
# devdb.sh prints the URL of a Postgres database for `make run` and
# `make test`, starting a private cluster when needed:
#
#   1. if DATABASE_URL is set and answers, it is used as is;
#   2. else, if the Postgres server binaries are installed, a private cluster
#      is created under .pgdata/ (git-ignored) and started on a free port from
#      54329 up, as an unprivileged user when run as root (initdb and pg_ctl
#      refuse to run as root);
#   3. else it says what to install, and fails.
#
# Only the URL goes to stdout; progress goes to stderr.
#
# Usage: scripts/devdb.sh [start|stop|status]
#
# The fault-injection suite (faults/) runs clusters of its own, which it
# stops and restarts, through these variables:
#   DEVDB_DIR        the cluster's data directory (default .pgdata/); when set,
#                    DATABASE_URL is ignored: that cluster is what is wanted
#   DEVDB_PORT       the first port to try (default 54329); 100 are tried
#   DEVDB_STOP_MODE  pg_ctl's stop mode: fast (default), or immediate to
#                    crash the server as a power cut would
set -euo pipefail

cmd=${1:-start}
root=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'devdb: %s\n' "$*" >&2; }

find_bindir() {
	local d
	if command -v pg_config >/dev/null 2>&1; then
		d=$(pg_config --bindir 2>/dev/null || true)
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
	fi
	if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
		dirname "$(command -v initdb)"; return
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin /usr/local/pgsql/bin /opt/homebrew/opt/postgresql*/bin /usr/local/opt/postgresql*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
	done
}

reachable() { # URL
	local bindir=$1 url=$2
	if [ -n "$bindir" ] && [ -x "$bindir/psql" ]; then
		"$bindir/psql" "$url" -XAtqc 'select 1' >/dev/null 2>&1
	elif command -v psql >/dev/null 2>&1; then
		psql "$url" -XAtqc 'select 1' >/dev/null 2>&1
	else
		return 1
	fi
}

bindir=$(find_bindir || true)

if [ "$cmd" = start ] && [ -z "${DEVDB_DIR:-}" ] && [ -n "${DATABASE_URL:-}" ]; then
	if reachable "$bindir" "$DATABASE_URL"; then
		say "using DATABASE_URL"
		echo "$DATABASE_URL"
		exit 0
	fi
	say "DATABASE_URL is set but does not answer; falling back to a private cluster"
fi

if [ -z "$bindir" ]; then
	cat >&2 <<'EOF'
devdb: no reachable DATABASE_URL, and no Postgres server binaries (initdb, pg_ctl) found.
Install them, then run the command again:
  Debian/Ubuntu:  sudo apt-get install postgresql
  Fedora/RHEL:    sudo dnf install postgresql-server
  macOS:          brew install postgresql@17
Or point DATABASE_URL at a Postgres you can create databases on.
EOF
	exit 1
fi

# Run cluster commands as an unprivileged user when we are root.
asroot=""
pguser=$(id -un)
if [ "$(id -u)" = 0 ]; then
	asroot=1
	if id postgres >/dev/null 2>&1; then pguser=postgres; else pguser=nobody; fi
fi
as_pg() {
	if [ -z "$asroot" ]; then "$@"
	elif command -v runuser >/dev/null 2>&1; then runuser -u "$pguser" -- "$@"
	else su -s /bin/sh "$pguser" -c "$(printf '%q ' "$@")"
	fi
}

# The data directory is project-local, unless the unprivileged user cannot
# reach it (a checkout under a private home directory, say).
datadir=${DEVDB_DIR:-$root/.pgdata}
if [ -n "$asroot" ]; then
	mkdir -p "$datadir"
	chown "$pguser" "$datadir"
	chmod 700 "$datadir"
	if ! as_pg test -w "$datadir" 2>/dev/null; then
		datadir=${TMPDIR:-/tmp}/webhook-outbox-pg-$(printf '%s' "$datadir" | cksum | cut -d' ' -f1)
		say "$pguser cannot write under $root; using $datadir instead"
		mkdir -p "$datadir"
		chown "$pguser" "$datadir"
		chmod 700 "$datadir"
	fi
fi
portfile=$datadir/outbox-port
logfile=$datadir/server.log

url_for() { echo "postgres://outbox@127.0.0.1:$1/outbox?sslmode=disable"; }

running() { [ -f "$datadir/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1; }

case "$cmd" in
stop)
	if running; then as_pg "$bindir/pg_ctl" -D "$datadir" -m "${DEVDB_STOP_MODE:-fast}" -w stop >&2; else say "not running"; fi
	exit 0 ;;
status)
	if running; then say "running on port $(cat "$portfile")"; url_for "$(cat "$portfile")"; exit 0; fi
	say "not running"; exit 1 ;;
start) ;;
*) say "unknown command $cmd (use start, stop or status)"; exit 2 ;;
esac

if [ ! -f "$datadir/PG_VERSION" ]; then
	say "creating a private Postgres cluster in $datadir"
	initlog=$(mktemp)
	as_pg "$bindir/initdb" -D "$datadir" --username=outbox --auth=trust --encoding=UTF8 --locale=C >"$initlog" 2>&1 || {
		cat "$initlog" >&2; rm -f "$initlog"; exit 1; }
	rm -f "$initlog"
	{
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$datadir'"
		echo "max_connections = 400"
		echo "shared_buffers = 128MB"
		echo "log_min_messages = warning"
		# For make bench's per-statement figures, where the module is installed.
		if [ -f "$bindir/../lib/pg_stat_statements.so" ]; then
			echo "shared_preload_libraries = 'pg_stat_statements'"
		fi
	} | as_pg tee -a "$datadir/postgresql.conf" >/dev/null
fi

if ! running; then
	port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
	port=""
	if [ -f "$portfile" ] && ! port_in_use "$(cat "$portfile")"; then port=$(cat "$portfile"); fi
	if [ -z "$port" ]; then
		first=${DEVDB_PORT:-54329}
		for p in $(seq "$first" $((first + 100))); do
			if ! port_in_use "$p"; then port=$p; break; fi
		done
	fi
	[ -n "$port" ] || { say "no free port between ${DEVDB_PORT:-54329} and $((${DEVDB_PORT:-54329} + 100))"; exit 1; }
	echo "$port" | as_pg tee "$portfile" >/dev/null
	say "starting the private cluster on 127.0.0.1:$port"
	if ! as_pg "$bindir/pg_ctl" -D "$datadir" -o "-p $port" -l "$logfile" -w -t 60 start >/dev/null; then
		say "Postgres did not start; its log follows"
		tail -n 30 "$logfile" >&2 || true
		exit 1
	fi
fi

port=$(cat "$portfile")
url=$(url_for "$port")
if ! "$bindir/psql" "postgres://outbox@127.0.0.1:$port/postgres?sslmode=disable" -XAtqc "select 1 from pg_database where datname = 'outbox'" | grep -q 1; then
	"$bindir/psql" "postgres://outbox@127.0.0.1:$port/postgres?sslmode=disable" -Xqc "create database outbox" >&2
fi
echo "$url"
