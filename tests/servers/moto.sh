#!/usr/bin/env bash
# moto S3 server with IAM enforcement, and a second moto for the Glacier vault
# API without it (moto 5.2.5 answers SignatureDoesNotMatch to every correctly
# signed Glacier request once IAM is enforced, boto3's own included), for the
# integration tests.
#   tests/servers/moto.sh start   # (re)start both; writes target/servers/moto.env
#   tests/servers/moto.sh stop
# See tests/servers/README.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=$ROOT/target/servers
VENV=$DIR/venv
PIDFILE=$DIR/moto.pid
LOG=$DIR/moto.log
GLACIER_PIDFILE=$DIR/moto-glacier.pid
GLACIER_LOG=$DIR/moto-glacier.log
ENVFILE=$DIR/moto.env

die() { echo "moto.sh: $*" >&2; exit 1; }

# True if $1 is a live process running our moto launcher (guards against PID reuse).
is_moto() {
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q moto_run.py
}

stop() {
  rm -f "$ENVFILE"
  stop_one "$PIDFILE"
  stop_one "$GLACIER_PIDFILE"
}

# Stops the server whose pid is in $1.
stop_one() {
  local PIDFILE=$1
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid=$(cat "$PIDFILE")
  if [[ "$pid" =~ ^[0-9]+$ ]] && is_moto "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do is_moto "$pid" || break; sleep 0.1; done
    if is_moto "$pid"; then
      echo "moto.sh: pid $pid ignored TERM for 5 s, sending KILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 20); do is_moto "$pid" || break; sleep 0.1; done
      is_moto "$pid" && die "pid $pid is still alive after KILL"
    fi
    echo "moto.sh: stopped pid $pid" >&2
  fi
  rm -f "$PIDFILE"
}

ensure_venv() {
  [ -f "$VENV/.installed" ] && return 0
  command -v python3 >/dev/null || die "python3 not found"
  echo "moto.sh: creating venv at $VENV and installing moto[server], boto3" >&2
  python3 -m venv --clear "$VENV" || die "python3 -m venv failed"
  "$VENV/bin/pip" install -q 'moto[server]==5.2.5' 'boto3==1.44.5' || die "pip install failed"
  touch "$VENV/.installed"
}

# Starts moto_run.py on a free port, pid in $1, log in $2; prints its URL
# once it answers.
launch() {
  local pidfile=$1 log=$2 port url pid
  port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  url=http://127.0.0.1:$port
  # moto_run.py is moto_server with its NoSuchUpload bug fixed (see the file).
  nohup "$VENV/bin/python" "$HERE/moto_run.py" -H 127.0.0.1 -p "$port" </dev/null >"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  local deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null "$url/moto-api/" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "moto.sh: the moto server exited during startup" >&2; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "moto.sh: no answer on $url after 30 s" >&2; return 1; }
    sleep 0.1
  done
  echo "$url"
}

start() {
  command -v curl >/dev/null || die "curl not found"
  mkdir -p "$DIR"
  stop
  ensure_venv

  local url glacier_url
  # From here on, a failure stops the servers again.
  trap 'echo "moto.sh: start failed; log tails:" >&2; tail -n 20 "$LOG" "$GLACIER_LOG" >&2 2>/dev/null; stop' ERR
  url=$(launch "$PIDFILE" "$LOG")
  glacier_url=$(launch "$GLACIER_PIDFILE" "$GLACIER_LOG")

  "$VENV/bin/python" "$HERE/moto_setup.py" "$url" "$ENVFILE"
  # For tests that run a server of their own (moto_run.py --state), and the
  # Glacier vault server (auth off: any key is accepted, signatures are not checked).
  printf 'MOTO_PYTHON=%s\nMOTO_RUN=%s\nMOTO_GLACIER_ENDPOINT=%s\n' \
    "$VENV/bin/python" "$HERE/moto_run.py" "$glacier_url" >>"$ENVFILE"
  curl -fsS -o /dev/null -X POST -H 'Content-Type: text/plain' --data-binary 0 "$url/moto-api/reset-auth"
  trap - ERR
  echo "moto.sh: moto pid $(cat "$PIDFILE") on $url, IAM enforced; Glacier vaults: pid $(cat "$GLACIER_PIDFILE") on $glacier_url; credentials in $ENVFILE" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
