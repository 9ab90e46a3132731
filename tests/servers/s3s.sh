#!/usr/bin/env bash
# s3s-fs (crates.io), an S3 server that keeps objects as files, for the
# bench's second S3 server: moto is too slow to tell two S3 clients apart.
#   tests/servers/s3s.sh start   # (re)start; writes target/servers/s3s.env
#   tests/servers/s3s.sh stop
# Needs cargo (the first start builds s3s-fs, a few minutes), python3 and
# curl. See tests/servers/README.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=$ROOT/target/servers
INSTALL=$DIR/s3s
BIN=$INSTALL/bin/s3s-fs
DATA=$DIR/s3s-data
PIDFILE=$DIR/s3s.pid
LOG=$DIR/s3s.log
ENVFILE=$DIR/s3s.env
# 0.15.0 and later declare rust-version 1.96; this machine has rustc 1.95.
VERSION=0.14.1
BUCKET=offsite-bench
REGION=us-east-1
# Fixed and public: the server only listens on 127.0.0.1 and holds test data.
ACCESS_KEY=offsite-s3s-access-key
SECRET_KEY=offsite-s3s-secret-key-not-a-secret

die() { echo "s3s.sh: $*" >&2; exit 1; }

SCRIPT=s3s.sh
# shellcheck source=lib.sh
. "$HERE/lib.sh"

stop() {
  rm -f "$ENVFILE"
  stop_one s3s-fs "$PIDFILE" "$BIN --host 127.0.0.1"
}

# cargo install, the first time or when the pin changes (the marker holds
# it). One job (-j 1): builds of offsite keep the other cores. The build
# folder is kept only while the install has not succeeded.
ensure_binary() {
  [ -x "$BIN" ] && [ "$(cat "$INSTALL/.installed" 2>/dev/null)" = "$VERSION" ] && return 0
  command -v cargo >/dev/null || die "cargo not found"
  echo "s3s.sh: installing s3s-fs $VERSION into $INSTALL (cargo install -j 1: a few minutes)" >&2
  rm -f "$INSTALL/.installed"
  local t0=$SECONDS
  cargo install s3s-fs --version "$VERSION" --features binary --locked -j 1 \
    --root "$INSTALL" --target-dir "$INSTALL/build" >&2 || die "cargo install s3s-fs $VERSION failed"
  rm -rf "$INSTALL/build"
  echo "$VERSION" >"$INSTALL/.installed"
  echo "s3s.sh: s3s-fs $VERSION installed in $((SECONDS - t0)) s" >&2
}

# True once the server answers a signed ListObjectsV2 on the bucket (curl
# signs SigV4 itself; s3s requires x-amz-content-sha256, which curl 7.88 does
# not send unasked: the SHA-256 of the empty body).
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
answers() { # URL
  curl -fsS -o /dev/null --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: $EMPTY_SHA256" "$1/$BUCKET?list-type=2&max-keys=1" 2>/dev/null
}

start() {
  command -v curl >/dev/null || die "curl not found"
  command -v python3 >/dev/null || die "python3 not found"
  mkdir -p "$DIR"
  stop
  ensure_binary

  local port url pid st tmp
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  url=http://127.0.0.1:$port

  # An empty store at every start; s3s-fs maps each top-level folder to a bucket.
  rm -rf "$DATA"
  mkdir -p "$DATA/$BUCKET"
  # setsid: its own process group, away from the terminal's signals. It logs
  # with tracing (RUST_LOG; errors and warnings only: info is a line per start).
  RUST_LOG=${S3S_LOG:-warn} setsid "$BIN" --host 127.0.0.1 --port "$port" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$DATA" </dev/null >"$LOG" 2>&1 &
  pid=$!
  st=$(stat_field "$pid" 22) || st=0
  echo "$pid $st" >"$PIDFILE"
  # From here on, a failure stops the server again (wait_until_ready has
  # printed the log tail if the server exited).
  trap 'echo "s3s.sh: start failed" >&2; if kill -0 "$pid" 2>/dev/null; then echo "s3s.sh: log tail:" >&2; tail -n 20 "$LOG" >&2; fi; stop' ERR

  wait_until_ready s3s-fs "$pid" "$LOG" answers "$url"

  tmp=$(mktemp "$DIR/.s3s.env.XXXXXX")
  cat >"$tmp" <<EOF
S3S_ENDPOINT=$url
S3S_BUCKET=$BUCKET
S3S_ACCESS_KEY_ID=$ACCESS_KEY
S3S_SECRET_ACCESS_KEY=$SECRET_KEY
S3S_REGION=$REGION
S3S_DATA=$DATA
EOF
  mv -f "$tmp" "$ENVFILE"
  trap - ERR
  echo "s3s.sh: s3s-fs $VERSION pid $pid on $url, bucket $BUCKET in $DATA; settings in $ENVFILE" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
