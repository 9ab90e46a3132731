#!/usr/bin/env bash
# Azurite's blob service (Azure Blob Storage emulator), for the integration tests.
#   tests/servers/azurite.sh start   # (re)start; writes target/servers/azurite.env
#   tests/servers/azurite.sh stop
# Needs node/npm, python3 and curl. See tests/servers/README.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=$ROOT/target/servers
NPMDIR=$DIR/azurite-npm
VENV=$DIR/azure-venv
DATA=$DIR/azurite-data
PIDFILE=$DIR/azurite.pid
LOG=$DIR/azurite.log
ENVFILE=$DIR/azurite.env
ADMIN=$DIR/azure-admin
# 3.36 and later need node >= 21 (npm's "engines"); this machine has node 20.
AZURITE=azurite@3.35.0
PINS=('azure-storage-blob==12.31.1')
ACCOUNT=devstoreaccount1
# Azurite's fixed development key (public, the same in every Azurite).
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
CONTAINERS=(offsite-conformance offsite-e2e)

die() { echo "azurite.sh: $*" >&2; exit 1; }

# True if $1 is a live azurite-blob with our data folder (guards against PID reuse).
is_ours() {
  kill -0 "$1" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "azurite-blob --blobHost 127.0.0.1" &&
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "--location $DATA "
}

stop() {
  rm -f "$ENVFILE"
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid=$(cat "$PIDFILE")
  if [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do is_ours "$pid" || break; sleep 0.1; done
    if is_ours "$pid"; then
      echo "azurite.sh: pid $pid ignored TERM for 5 s, sending KILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 20); do is_ours "$pid" || break; sleep 0.1; done
      is_ours "$pid" && die "pid $pid is still alive after KILL"
    fi
    echo "azurite.sh: stopped pid $pid" >&2
  fi
  rm -f "$PIDFILE"
}

ensure_azurite() {
  [ "$(cat "$NPMDIR/.installed" 2>/dev/null)" = "$AZURITE" ] && return 0
  command -v npm >/dev/null || die "npm not found"
  echo "azurite.sh: installing $AZURITE into $NPMDIR" >&2
  rm -rf "$NPMDIR"
  mkdir -p "$NPMDIR"
  npm install --prefix "$NPMDIR" --no-audit --no-fund "$AZURITE" >&2 || die "npm install failed"
  echo "$AZURITE" >"$NPMDIR/.installed"
}

ensure_venv() {
  [ "$(cat "$VENV/.installed" 2>/dev/null)" = "${PINS[*]}" ] && return 0
  command -v python3 >/dev/null || die "python3 not found"
  echo "azurite.sh: creating venv at $VENV and installing ${PINS[*]}" >&2
  python3 -m venv --clear "$VENV" || die "python3 -m venv failed"
  "$VENV/bin/pip" install -q "${PINS[@]}" || die "pip install failed"
  echo "${PINS[*]}" >"$VENV/.installed"
}

start() {
  command -v curl >/dev/null || die "curl not found"
  mkdir -p "$DIR"
  stop
  ensure_azurite
  ensure_venv

  # The command the tests run for azure_admin.py (it reads the AZURE_* variables).
  local tmp
  tmp=$(mktemp "$DIR/.azure-admin.XXXXXX")
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$VENV/bin/python" "$HERE/azure_admin.py" >"$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$ADMIN"

  local port url pid wrong_key
  port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  wrong_key=$("$VENV/bin/python" -c 'import base64, os; print(base64.b64encode(os.urandom(64)).decode())')
  url=http://127.0.0.1:$port/$ACCOUNT

  rm -rf "$DATA" # an empty store at every start
  mkdir -p "$DATA"
  # setsid: its own process group, away from the terminal's signals.
  setsid "$NPMDIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$DATA" --skipApiVersionCheck --loose --disableTelemetry </dev/null >"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  # From here on, a failure stops the server again.
  trap 'echo "azurite.sh: start failed; log tail:" >&2; tail -n 20 "$LOG" >&2; stop' ERR

  # Ready at its first HTTP answer (whatever the status).
  local deadline=$((SECONDS + 30))
  until curl -sS -o /dev/null "$url" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "azurite.sh: azurite-blob exited during startup" >&2; false; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "azurite.sh: no answer on $url after 30 s" >&2; false; }
    sleep 0.1
  done

  AZURE_ENDPOINT=$url AZURE_ACCOUNT=$ACCOUNT AZURE_KEY=$KEY "$ADMIN" container "${CONTAINERS[@]}"

  tmp=$(mktemp "$DIR/.azurite.env.XXXXXX")
  cat >"$tmp" <<EOF
AZURE_ENDPOINT=$url
AZURE_ACCOUNT=$ACCOUNT
AZURE_KEY=$KEY
AZURE_WRONG_KEY=$wrong_key
AZURE_ADMIN=$ADMIN
EOF
  mv -f "$tmp" "$ENVFILE"
  trap - ERR
  echo "azurite.sh: azurite-blob pid $pid on $url, containers ${CONTAINERS[*]}; settings in $ENVFILE" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
