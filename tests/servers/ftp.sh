#!/usr/bin/env bash
# Three FTP servers on 127.0.0.1, for the FTP/FTPS tests:
#   pyftpdlib (PyPI): explicit TLS required on control and data connections;
#   pure-ftpd (Debian): plain FTP or explicit TLS, a virtual user in a chroot;
#   ftps_implicit.py: pyftpdlib with implicit TLS (TLS from the first byte).
#   tests/servers/ftp.sh start   # (re)start all; writes target/servers/ftp.env
#   tests/servers/ftp.sh stop
# Needs root (pure-ftpd chroots and switches to the user offsite-ftp, which
# start creates if it is missing). See tests/servers/README.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=$ROOT/target/servers
FD=$DIR/ftp
TLS=$FD/tls
VENV=$DIR/ftp-venv
ENVFILE=$DIR/ftp.env
PY_PIDFILE=$DIR/pyftpd.pid
PY_LOG=$DIR/pyftpd.log
PY_ROOT=$FD/pyftpd-data
PURE_PIDFILE=$DIR/pureftpd.pid
PURE_LOG=$DIR/pureftpd.log
PURE_ROOT=$FD/pureftpd-data
PURE=/usr/sbin/pure-ftpd
FTP_USER=offsite       # the login on both servers
PURE_UID_USER=offsite-ftp # the system user that owns pure-ftpd's files
PINS=('pyftpdlib==2.2.0' 'pyopenssl==26.4.0')
# Passive ports: below Linux's ephemeral range (32768-60999), apart from each other.
PY_PASV=31000-31999
PURE_PASV=30000:30999
# ftps_implicit.py: pyftpdlib with implicit TLS (pyftpdlib itself has only explicit).
IMP_PIDFILE=$DIR/ftps-implicit.pid
IMP_LOG=$DIR/ftps-implicit.log
IMP_ROOT=$FD/implicit-data
IMP_PASV=29000-29999

die() { echo "ftp.sh: $*" >&2; exit 1; }

SCRIPT=ftp.sh
# shellcheck source=lib.sh
. "$HERE/lib.sh"

stop() {
  rm -f "$ENVFILE"
  stop_one pyftpdlib "$PY_PIDFILE" "-d $PY_ROOT"
  stop_one pure-ftpd "$PURE_PIDFILE" pure-ftpd
  stop_one ftps-implicit "$IMP_PIDFILE" ftps_implicit.py
}

ensure_packages() {
  [ -x "$PURE" ] && command -v pure-pw >/dev/null && command -v openssl >/dev/null && return 0
  echo "ftp.sh: installing pure-ftpd openssl" >&2
  apt-get update -qq || die "apt-get update failed"
  # --no-remove: pure-ftpd conflicts with proftpd and vsftpd; never remove them silently.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-remove pure-ftpd openssl >/dev/null ||
    die "apt-get install pure-ftpd openssl failed (is proftpd or vsftpd installed?)"
}

ensure_venv() {
  [ "$(cat "$VENV/.installed" 2>/dev/null)" = "${PINS[*]}" ] && return 0
  command -v python3 >/dev/null || die "python3 not found"
  echo "ftp.sh: creating venv at $VENV and installing ${PINS[*]}" >&2
  python3 -m venv --clear "$VENV" || die "python3 -m venv failed"
  "$VENV/bin/pip" install -q "${PINS[@]}" || die "pip install failed"
  echo "${PINS[*]}" >"$VENV/.installed"
}

# The test CA and leaf (lib.sh's make_test_ca), new at every start.
make_certs() {
  make_test_ca "$TLS" ec ""
  cat "$TLS/leaf.pem" "$TLS/leaf-key.pem" >"$TLS/leaf+key.pem" # pure-ftpd's -2 takes one file
  chmod 0600 "$TLS/leaf+key.pem"
}

random_password() {
  local p
  p=$(head -c 300 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  [ ${#p} -ge 24 ] || die "could not make a password"
  echo "${p:0:24}"
}

# True once a server on 127.0.0.1:$1 greets with 220 (over TLS from the
# first byte when $2 is "implicit").
greets() {
  if [ "${2:-}" = implicit ]; then
    "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # a readiness probe only; the tests verify
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as raw:
    with ctx.wrap_socket(raw) as s:
        sys.exit(0 if s.recv(4).startswith(b"220") else 1)
PY
    return
  fi
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 2 line <&3 && [[ "$line" == 220* ]]
  ) 2>/dev/null
}

wait_ready() { # NAME PID PORT LOG [implicit]
  wait_until_ready "$1" "$2" "$4" greets "$3" "${5:-}"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (pure-ftpd chroots and switches users)"
  command -v python3 >/dev/null || die "python3 not found"
  mkdir -p "$DIR" "$FD"
  stop
  ensure_packages
  ensure_venv
  make_certs

  getent passwd "$PURE_UID_USER" >/dev/null ||
    useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$PURE_UID_USER" || die "useradd $PURE_UID_USER failed"
  local uid gid py_pass pure_pass
  uid=$(id -u "$PURE_UID_USER")
  gid=$(id -g "$PURE_UID_USER")
  py_pass=$(random_password)
  pure_pass=$(random_password)

  # Fresh, empty data roots at every start.
  rm -rf "$PY_ROOT" "$PURE_ROOT" "$IMP_ROOT"
  install -d -m 0755 "$PY_ROOT"
  install -d -m 0755 "$IMP_ROOT"
  install -d -m 0755 -o "$uid" -g "$gid" "$PURE_ROOT"

  # pure-ftpd's virtual user. `pure-pw useradd` hashes so slowly that every
  # login would cost ~3 s; a SHA-512-crypt line is what it accepts as well.
  # "/./" marks the chroot.
  (
    umask 077
    echo "$FTP_USER:$(openssl passwd -6 "$pure_pass"):$uid:$gid::$PURE_ROOT/./::::::::::::" >"$FD/pureftpd.passwd"
  )
  rm -f "$FD/pureftpd.pdb"
  pure-pw mkdb "$FD/pureftpd.pdb" -f "$FD/pureftpd.passwd" >/dev/null || die "pure-pw mkdb failed"

  local py_port pure_port imp_port ports
  ports=$("$VENV/bin/python" -c '
import socket
a, b, c = socket.socket(), socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0)); c.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1], c.getsockname()[1])')
  read -r py_port pure_port imp_port <<<"$ports"

  local py_pid pure_pid st
  setsid "$VENV/bin/python" -m pyftpdlib -i 127.0.0.1 -p "$py_port" -w -d "$PY_ROOT" \
    -u "$FTP_USER" -P "$py_pass" -r "$PY_PASV" \
    --tls --certfile "$TLS/leaf.pem" --keyfile "$TLS/leaf-key.pem" \
    --tls-control-required --tls-data-required </dev/null >"$PY_LOG" 2>&1 &
  py_pid=$!
  st=$(stat_field "$py_pid" 22) || st=0
  echo "$py_pid $st" >"$PY_PIDFILE"
  # In the foreground unless -B. It logs to syslog only (there is none here), so its log stays empty.
  setsid "$PURE" -S "127.0.0.1,$pure_port" -l "puredb:$FD/pureftpd.pdb" -E -A -H \
    -p "$PURE_PASV" -P 127.0.0.1 -Y 1 -2 "$TLS/leaf+key.pem" </dev/null >"$PURE_LOG" 2>&1 &
  pure_pid=$!
  st=$(stat_field "$pure_pid" 22) || st=0
  echo "$pure_pid $st" >"$PURE_PIDFILE"
  local imp_pid
  setsid "$VENV/bin/python" "$HERE/ftps_implicit.py" "$imp_port" "$IMP_ROOT" "$FTP_USER" "$py_pass" \
    "$TLS/leaf.pem" "$TLS/leaf-key.pem" "$IMP_PASV" "$FTP_USER-reader" </dev/null >"$IMP_LOG" 2>&1 &
  imp_pid=$!
  st=$(stat_field "$imp_pid" 22) || st=0
  echo "$imp_pid $st" >"$IMP_PIDFILE"
  # From here on, a failure stops every server again.
  trap 'echo "ftp.sh: start failed" >&2; stop' ERR

  wait_ready pyftpdlib "$py_pid" "$py_port" "$PY_LOG"
  wait_ready pure-ftpd "$pure_pid" "$pure_port" "$PURE_LOG"
  wait_ready ftps-implicit "$imp_pid" "$imp_port" "$IMP_LOG" implicit

  local tmp
  tmp=$(mktemp "$DIR/.ftp.env.XXXXXX")
  cat >"$tmp" <<EOF
FTP_HOST=127.0.0.1
PYFTPD_PORT=$py_port
PYFTPD_USER=$FTP_USER
PYFTPD_PASSWORD=$py_pass
PYFTPD_ROOT=$PY_ROOT
PUREFTPD_PORT=$pure_port
PUREFTPD_USER=$FTP_USER
PUREFTPD_PASSWORD=$pure_pass
PUREFTPD_ROOT=$PURE_ROOT
IMPLICIT_PORT=$imp_port
IMPLICIT_USER=$FTP_USER
IMPLICIT_PASSWORD=$py_pass
IMPLICIT_READER_USER=$FTP_USER-reader
IMPLICIT_ROOT=$IMP_ROOT
FTP_CA_FILE=$TLS/ca.pem
FTP_OTHER_CA_FILE=$TLS/other-ca.pem
EOF
  mv -f "$tmp" "$ENVFILE"
  trap - ERR
  echo "ftp.sh: pyftpdlib pid $py_pid on 127.0.0.1:$py_port (TLS required)," \
    "pure-ftpd pid $pure_pid on 127.0.0.1:$pure_port (TLS optional)," \
    "implicit-TLS pyftpdlib pid $imp_pid on 127.0.0.1:$imp_port; settings in $ENVFILE" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
