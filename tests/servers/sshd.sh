#!/usr/bin/env bash
# OpenSSH sshd on 127.0.0.1 (SFTP via internal-sftp), for the SFTP tests.
#   tests/servers/sshd.sh start   # (re)start; writes target/servers/sshd.env
#   tests/servers/sshd.sh stop
# Needs root: sshd switches to the test user offsite-sftp, which start
# creates if it is missing. See tests/servers/README.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=$ROOT/target/servers
SD=$DIR/sshd
PIDFILE=$DIR/sshd.pid
LOG=$DIR/sshd.log
ENVFILE=$DIR/sshd.env
CFG=$SD/sshd_config
HOSTKEY=$SD/host_ed25519_key
WRONGKEY=$SD/wrong_host_ed25519_key
CLIENTKEY=$SD/client_ed25519_key
RSAKEY=$SD/client_rsa_key
SSHD=/usr/sbin/sshd
SFTP_USER=offsite-sftp

die() { echo "sshd.sh: $*" >&2; exit 1; }

# True if $1 is a live sshd started with our config (guards against PID reuse).
# sshd rewrites its title, but the title keeps the command line.
is_sshd() {
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "-f $CFG"
}

# The direct children of $1, one PID per line.
children() {
  cat "/proc/$1/task/$1/children" 2>/dev/null || pgrep -P "$1" || true
}

# True if $1 is a live sshd process (of a session); a zombie has no command line.
is_session() {
  tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q '^sshd'
}

# True if the listener $1 or one of the sessions $2... is still running.
any_alive() {
  local k
  is_sshd "$1" && return 0
  shift
  for k; do is_session "$k" && return 0; done
  return 1
}

stop() {
  rm -f "$ENVFILE"
  [ -f "$PIDFILE" ] || return 0
  local pid kids=() k
  pid=$(cat "$PIDFILE")
  if [[ "$pid" =~ ^[0-9]+$ ]] && is_sshd "$pid"; then
    # The listener exits on TERM but leaves open sessions running (they are
    # its children, each in a session of its own): end those too.
    read -ra kids <<<"$(children "$pid" | tr '\n' ' ')"
    kill -TERM "$pid" "${kids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do any_alive "$pid" "${kids[@]}" || break; sleep 0.1; done
    if any_alive "$pid" "${kids[@]}"; then
      echo "sshd.sh: pid $pid or its sessions ignored TERM for 5 s, sending KILL" >&2
      is_sshd "$pid" && kill -KILL "$pid" 2>/dev/null
      for k in "${kids[@]}"; do is_session "$k" && kill -KILL "$k" 2>/dev/null; done
      for _ in $(seq 20); do any_alive "$pid" "${kids[@]}" || break; sleep 0.1; done
      any_alive "$pid" "${kids[@]}" && die "pid $pid or its sessions are still alive after KILL"
    fi
    echo "sshd.sh: stopped pid $pid" >&2
  fi
  rm -f "$PIDFILE"
}

ensure_packages() {
  [ -x "$SSHD" ] && command -v ssh-keygen >/dev/null && command -v ssh-keyscan >/dev/null && return 0
  echo "sshd.sh: installing openssh-server openssh-client" >&2
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-remove openssh-server openssh-client >/dev/null ||
    die "apt-get install openssh-server openssh-client failed"
}

# ssh-keygen asks before overwriting, so remove any half-written pair first.
keygen() { # FILE TYPE [ssh-keygen options...]
  local f=$1 t=$2
  shift 2
  rm -f "$f" "$f.pub"
  ssh-keygen -q -t "$t" -N '' -C "offsite-test-$t" -f "$f" "$@" </dev/null
}

# Keys are kept across starts (the RSA one takes ~0.5 s); delete target/servers/sshd to renew them.
ensure_keys() {
  local f
  for f in "$HOSTKEY:ed25519" "$CLIENTKEY:ed25519" "$RSAKEY:rsa"; do
    [ -s "${f%%:*}" ] && [ -s "${f%%:*}.pub" ] || keygen "${f%%:*}" "${f##*:}"
  done
  # A host key the server does not have, for the "wrong host key" test: new at every start.
  keygen "$WRONGKEY" ed25519
}

# True if the test user can write in $1 and read $2 (every parent must be searchable).
user_can_use() {
  runuser -u "$SFTP_USER" -- test -w "$1" -a -x "$1" -a -r "$2"
}

ensure_user() {
  getent passwd "$SFTP_USER" >/dev/null && return 0
  useradd -M -d "$1" -s /bin/sh "$SFTP_USER" || die "useradd $SFTP_USER failed"
}

# The home is where relative SFTP paths start; the password is new at every start.
set_home_and_password() {
  local cur
  cur=$(getent passwd "$SFTP_USER" | cut -d: -f6)
  # usermod refuses while the user has processes (say another checkout's
  # sessions): then only warn.
  if [ "$cur" != "$1" ]; then
    usermod -d "$1" "$SFTP_USER" 2>/dev/null ||
      echo "sshd.sh: warning: $SFTP_USER's home stays $cur (usermod failed); use absolute paths" >&2
  fi
  # chpasswd also unlocks the account, which sshd requires (UsePAM no) even for keys.
  echo "$SFTP_USER:$2" | chpasswd || die "chpasswd failed"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (sshd switches to the test user $SFTP_USER)"
  command -v python3 >/dev/null || die "python3 not found"
  mkdir -p "$DIR" "$SD"
  stop
  ensure_packages
  mkdir -p /run/sshd
  ensure_keys

  local password
  password=$(head -c 300 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  password=${password:0:24}
  [ ${#password} -eq 24 ] || die "could not make a password"

  # What the test user must reach: the data root and its authorized keys.
  # Under target/ if the user can get there, else under /srv.
  local base data keys
  ensure_user "$SD/data"
  for base in "$SD" "/srv/offsite-test-sftp/${ROOT//[^A-Za-z0-9]/_}"; do
    data=$base/data keys=$base/keys
    rm -rf "$data" "$keys"
    install -d -m 0755 "$keys"
    install -d -m 0755 -o "$SFTP_USER" -g "$(id -g "$SFTP_USER")" "$data"
    cat "$CLIENTKEY.pub" "$RSAKEY.pub" >"$keys/$SFTP_USER"
    chmod 0644 "$keys/$SFTP_USER"
    if user_can_use "$data" "$keys/$SFTP_USER"; then break; fi
    echo "sshd.sh: $SFTP_USER cannot reach $base (permissions of a parent folder?)" >&2
    rm -rf "$data" "$keys"
    data=
  done
  [ -n "$data" ] || die "no folder the user $SFTP_USER can reach"
  [ "$base" = "$SD" ] || echo "sshd.sh: using $base for the data root and keys" >&2
  set_home_and_password "$data" "$password"

  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$CFG" <<EOF
# Written by tests/servers/sshd.sh at every start.
Port $port
ListenAddress 127.0.0.1
HostKey $HOSTKEY
PidFile $SD/sshd.pid
StrictModes no
AuthorizedKeysFile $keys/%u
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
AllowUsers $SFTP_USER
Subsystem sftp internal-sftp
LogLevel VERBOSE
EOF
  "$SSHD" -t -f "$CFG" || die "$SSHD -t -f $CFG failed"

  local pid
  # setsid: its own process group, away from the terminal's signals.
  setsid "$SSHD" -D -e -f "$CFG" </dev/null >"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  # From here on, a failure stops the server again.
  trap 'echo "sshd.sh: start failed; log tail:" >&2; tail -n 20 "$LOG" >&2; stop' ERR

  # Ready when it serves our host key.
  local deadline=$((SECONDS + 10)) want got
  want=$(cut -d' ' -f1,2 "$HOSTKEY.pub")
  until got=$(ssh-keyscan -T 2 -t ed25519 -p "$port" 127.0.0.1 2>/dev/null) && [[ "$got" == *"$want"* ]]; do
    kill -0 "$pid" 2>/dev/null || { echo "sshd.sh: sshd exited during startup" >&2; false; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "sshd.sh: sshd does not serve its host key on port $port after 10 s" >&2; false; }
    sleep 0.1
  done

  echo "[127.0.0.1]:$port $want" >"$SD/known_hosts"
  echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$WRONGKEY.pub")" >"$SD/known_hosts_wrong"
  : >"$SD/known_hosts_empty"

  local fingerprint tmp
  fingerprint=$(ssh-keygen -lf "$HOSTKEY.pub" | cut -d' ' -f2)
  tmp=$(mktemp "$DIR/.sshd.env.XXXXXX")
  cat >"$tmp" <<EOF
SFTP_HOST=127.0.0.1
SFTP_PORT=$port
SFTP_USER=$SFTP_USER
SFTP_PASSWORD=$password
SFTP_KEY_FILE=$CLIENTKEY
SFTP_RSA_KEY_FILE=$RSAKEY
SFTP_KNOWN_HOSTS=$SD/known_hosts
SFTP_KNOWN_HOSTS_WRONG=$SD/known_hosts_wrong
SFTP_KNOWN_HOSTS_EMPTY=$SD/known_hosts_empty
SFTP_ROOT=$data
SFTP_HOST_FINGERPRINT=$fingerprint
EOF
  mv -f "$tmp" "$ENVFILE"
  trap - ERR
  echo "sshd.sh: sshd pid $pid on 127.0.0.1:$port, user $SFTP_USER, root $data; settings in $ENVFILE" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
