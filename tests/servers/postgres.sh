#!/usr/bin/env bash
# A PostgreSQL server of our own on 127.0.0.1 (Debian's `postgresql` package,
# run straight from /usr/lib/postgresql/<version>/bin), for the database tests.
#   tests/servers/postgres.sh start    # (re)start; fresh cluster; writes target/servers/postgres.env
#   tests/servers/postgres.sh stop
#   tests/servers/postgres.sh status   # exit 0 if running and accepting connections, 3 if not
# Needs root: the server runs as the unprivileged OS user postgres (PostgreSQL
# refuses to run as root), created if missing. Never touches the package's own
# cluster (/etc/postgresql, /var/lib/postgresql; no pg_ctlcluster, no
# service). See tests/servers/README.md; tests/servers/pg_fixture.sh fills
# and checksums databases.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=$ROOT/target/servers
PD=$DIR/postgres
PIDFILE=$DIR/postgres.pid
LOG=$DIR/postgres.log
ENVFILE=$DIR/postgres.env
OS_USER=postgres # owns the cluster and runs the server
DB_USER=postgres # the cluster's superuser (initdb -U)
# The fallback for the cluster when $OS_USER cannot reach $PD (a parent
# folder it may not search): one per checkout.
FALLBACK=/var/tmp/offsite-postgres-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)

die() { echo "postgres.sh: $*" >&2; exit 1; }

# The newest installed server's bin folder, or nothing.
find_bin() {
  local p
  p=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1) || true
  [ -n "$p" ] && dirname "$p"
}

SCRIPT=postgres.sh
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# is_ours and stop_one of lib.sh are not enough here: the postmaster is
# told apart by its data folder and stopped PostgreSQL's way (below).

# True if $1 is a live (not zombie) postmaster of the data folder $3, started
# at clock tick $2 (field 22 of its stat, kept in the pid file; "-" skips that
# check). The postmaster keeps its command line (its children retitle
# themselves "postgres: ..."), so "-D DATA" identifies it.
is_ours() { # PID STARTTIME DATA
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(stat_field "$1" 3) && [ "$state" != Z ] || return 1
  [ "$2" = - ] || [ "$(stat_field "$1" 22)" = "$2" ] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "/postgres -D $3 "
}

# Stops the postmaster $1 of data folder $3 (start time $2): SIGINT is
# PostgreSQL's "fast" shutdown (like pg_ctl stop -m fast: open sessions are
# ended, then a shutdown checkpoint). A large checkpoint can take a while, so
# it waits 60 s; then SIGQUIT (immediate shutdown), and KILL to its process
# group as the last resort.
stop_pid() { # PID STARTTIME DATA
  local pid=$1 st=$2 data=$3 sig
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 600); do is_ours "$pid" "$st" "$data" || break; sleep 0.1; done
  for sig in QUIT KILL; do
    is_ours "$pid" "$st" "$data" || break
    echo "postgres.sh: pid $pid still running, sending $sig" >&2
    if [ $sig = KILL ] && [ "$(stat_field "$pid" 5)" = "$pid" ]; then
      kill -KILL -- "-$pid" 2>/dev/null || true
    else
      kill -"$sig" "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 50); do is_ours "$pid" "$st" "$data" || break; sleep 0.1; done
  done
  is_ours "$pid" "$st" "$data" && die "pid $pid is still alive after KILL"
  echo "postgres.sh: stopped pid $pid" >&2
}

stop() {
  rm -f "$ENVFILE"
  local pid= st= data= base
  if [ -f "$PIDFILE" ]; then
    read -r pid st data <"$PIDFILE" || true
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ -n "$st" ] && [ -n "$data" ] && is_ours "$pid" "$st" "$data"; then
      stop_pid "$pid" "$st" "$data"
    fi
    rm -f "$PIDFILE"
  fi
  # A server of ours whose pid file is gone (say, a start killed halfway):
  # found by the pid in its own data folder's postmaster.pid, and only if
  # that process is a postmaster of that folder.
  for base in "$PD" "$FALLBACK"; do
    pid=$(head -n 1 "$base/data/postmaster.pid" 2>/dev/null) || continue
    if [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid" - "$base/data"; then
      stop_pid "$pid" - "$base/data"
    fi
  done
}

status() {
  local pid= st= data= port
  if [ -f "$PIDFILE" ]; then read -r pid st data <"$PIDFILE" || true; fi
  if ! [[ "$pid" =~ ^[0-9]+$ ]] || [ -z "$data" ] || ! is_ours "$pid" "$st" "$data"; then
    echo "postgres.sh: not running" >&2
    return 3
  fi
  port=$(sed -n 's/^PGPORT=//p' "$ENVFILE" 2>/dev/null)
  if [ -n "$port" ] && "$(find_bin)/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$DB_USER" -d postgres; then
    echo "postgres.sh: pid $pid on 127.0.0.1:$port, data $data, accepting connections" >&2
    return 0
  fi
  echo "postgres.sh: pid $pid (data $data) runs but does not accept connections${port:+ on 127.0.0.1:$port}" >&2
  return 3
}

ensure_packages() {
  [ -n "$(find_bin)" ] && return 0
  # Debian's package creates the user postgres and a default cluster
  # (15/main), which this script never uses; the image's policy-rc.d keeps
  # the package from starting it.
  echo "postgres.sh: installing postgresql" >&2
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null ||
    die "apt-get install postgresql failed"
  [ -n "$(find_bin)" ] || die "no /usr/lib/postgresql/*/bin/postgres after installing postgresql"
}

ensure_user() {
  getent passwd "$OS_USER" >/dev/null && return 0
  useradd --system --user-group -M -d /nonexistent -s /bin/sh "$OS_USER" || die "useradd $OS_USER failed"
}

# Runs a command as $OS_USER with a clean environment. setpriv execs (no
# child process stays behind), so a PID taken of it is the command's own.
as_user() {
  setpriv --reuid="$OS_USER" --regid="$OS_USER" --init-groups -- \
    env -i PATH=/usr/bin:/bin LC_ALL=C "$@"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (the server runs as the user $OS_USER)"
  command -v python3 >/dev/null || die "python3 not found"
  mkdir -p "$DIR"
  stop
  ensure_packages
  ensure_user
  local bin version
  bin=$(find_bin)
  version=$("$bin/postgres" --version) || die "$bin/postgres --version failed"

  # The cluster folder must be reachable by $OS_USER: PostgreSQL runs as that
  # user and initdb/postgres need search permission on every parent of the
  # data folder. target/servers/postgres when the user can get there (the
  # checkout's parents are usually 0755), else $FALLBACK under /var/tmp.
  # The data folder itself must be owned by that user with mode 0700 (or
  # 0750 with initdb --allow-group-access), or postgres refuses to start.
  local base data sock scratch
  for base in "$PD" "$FALLBACK"; do
    data=$base/data sock=$base/sock scratch=$base/scratch
    rm -rf "$data" "$sock" "$scratch"
    install -d -m 0755 "$base"
    install -d -m 0700 -o "$OS_USER" -g "$OS_USER" "$data"
    install -d -m 0755 -o "$OS_USER" -g "$OS_USER" "$sock" "$scratch"
    if runuser -u "$OS_USER" -- test -w "$data" -a -x "$data" -a -w "$sock" -a -x "$sock" -a -w "$scratch"; then break; fi
    echo "postgres.sh: $OS_USER cannot reach $base (permissions of a parent folder?)" >&2
    rm -rf "$data" "$sock" "$scratch"
    data=
  done
  [ -n "$data" ] || die "no folder the user $OS_USER can reach"
  [ "$base" = "$PD" ] || echo "postgres.sh: using $base for the cluster" >&2

  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

  : >"$LOG"
  # Trust authentication: anyone on this machine may connect as any role
  # (test only). --data-checksums: a damaged page fails its read. --no-sync:
  # the cluster is thrown away at every start anyway.
  as_user "$bin/initdb" -D "$data" -U "$DB_USER" --auth=trust -E UTF8 --locale=C --data-checksums \
    --no-sync --no-instructions >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "initdb failed"; }
  # In the cluster's own configuration, so a copy of the folder (say, made
  # by pg_basebackup) starts with the same settings; a copy needs its own
  # -p PORT and -k SOCKDIR on the command line while this server runs.
  cat >>"$data/postgresql.conf" <<EOF

# Added by tests/servers/postgres.sh.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
EOF

  local pid st
  # setsid: its own session and process group, away from the terminal's
  # signals; it execs (no fork) when not a group leader, as here. Logs to
  # stderr (no logging_collector).
  setsid setpriv --reuid="$OS_USER" --regid="$OS_USER" --init-groups -- \
    env -i PATH=/usr/bin:/bin LC_ALL=C "$bin/postgres" -D "$data" </dev/null >>"$LOG" 2>&1 &
  pid=$!
  st=$(stat_field "$pid" 22) || st=0
  echo "$pid $st $data" >"$PIDFILE"
  # From here on, a failure stops the server again.
  trap 'echo "postgres.sh: start failed; log tail:" >&2; tail -n 20 "$LOG" >&2; stop' ERR

  local deadline=$((SECONDS + 30)) rc
  until "$bin/pg_isready" -q -t 2 -h 127.0.0.1 -p "$port" -U "$DB_USER" -d postgres; do
    if ! is_ours "$pid" "$st" "$data"; then
      rc=0
      wait "$pid" || rc=$?
      echo "postgres.sh: postgres exited during startup (status $rc)" >&2
      false
    fi
    [ "$SECONDS" -lt "$deadline" ] || { echo "postgres.sh: postgres does not accept connections on port $port after 30 s" >&2; false; }
    sleep 0.1
  done
  # pg_isready does not log in; a query shows that trust authentication works.
  [ "$("$bin/psql" -X -At -h 127.0.0.1 -p "$port" -U "$DB_USER" -d postgres -c 'select 1')" = 1 ]

  local tmp
  tmp=$(mktemp "$DIR/.postgres.env.XXXXXX")
  cat >"$tmp" <<EOF
PGHOST=127.0.0.1
PGPORT=$port
PGUSER=$DB_USER
PG_BIN=$bin
PG_VERSION=$(basename "$(dirname "$bin")")
PG_OS_USER=$OS_USER
PG_DATA=$data
PG_SOCKET_DIR=$sock
PG_SCRATCH=$scratch
PG_FIXTURE=$HERE/pg_fixture.sh
EOF
  mv -f "$tmp" "$ENVFILE"
  trap - ERR
  echo "postgres.sh: $version pid $pid on 127.0.0.1:$port (socket in $sock), superuser $DB_USER (trust)," \
    "data $data; settings in $ENVFILE" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
