#!/usr/bin/env bash
# ProFTPD 1.3.8 as Debian 12 ships it, on 127.0.0.1, for the FTP/FTPS tests.
# Two instances, both plain FTP or explicit TLS (stock: TLSRequired off):
#   proftpd            certificate signed by a private CA (normal verification);
#   proftpd-selfsigned a plain `openssl req -x509` certificate (CA:TRUE, as
#                      Debian's proftpd-gencert makes it; for pinning).
#   tests/servers/proftpd.sh start    # (re)start both; writes target/servers/proftpd.env
#   tests/servers/proftpd.sh stop
#   tests/servers/proftpd.sh status   # exit 0 if both run, 3 otherwise
# pure-ftpd (ftp.sh) and proftpd are conflicting Debian packages, so the
# proftpd .debs are downloaded (apt-get download) and unpacked (dpkg -x) under
# target/servers/proftpd-pkg/, never installed. The configuration is Debian's
# stock proftpd.conf + modules.conf + tls.conf from that package with a few
# lines changed; the stock defaults offsite must cope with stay: no
# AllowStoreRestart (REST + STOR and APPE refused) and TLS session reuse
# required on data connections. Needs root (proftpd chroots and switches
# users; start creates the system users offsite-ftp and offsite-proftpd if
# they are missing).
# See tests/servers/README.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=$ROOT/target/servers
PD=$DIR/proftpd
TLS=$PD/tls
PKG=$DIR/proftpd-pkg
PKGROOT=$PKG/root
PROFTPD=$PKGROOT/usr/sbin/proftpd
LIBDIR=$PKGROOT/usr/lib/x86_64-linux-gnu
TEMPLATES=$PKGROOT/usr/share/proftpd/templates
ENVFILE=$DIR/proftpd.env
FTP_USER=offsite-proftpd  # the login: a system user (PAM + /etc/passwd, as stock)
DAEMON_USER=offsite-ftp   # proftpd's `User` (stock: proftpd); shared with ftp.sh
# The packages proftpd needs beyond Debian's base: the server, mod_tls, and
# the libraries proftpd-core links that this image lacks (checked with ldd
# after unpacking; a library that is already installed is not downloaded).
PACKAGES=(proftpd-core proftpd-mod-crypto)
LIB_PACKAGES=(libhiredis0.14 libmemcached11 libmemcachedutil2 libhashkit2 libpcre2-posix3)
# Instances: name, passive range (below Linux's ephemeral range 32768-60999,
# apart from ftp.sh's 29000-31999).
NAMES=(proftpd proftpd-selfsigned)
declare -A PASV=([proftpd]="28000 28499" [proftpd-selfsigned]="28500 28999")

die() { echo "proftpd.sh: $*" >&2; exit 1; }

pidfile() { echo "$DIR/$1.pid"; }
logfile() { echo "$DIR/$1.log"; }
conffile() { echo "$PD/$1/proftpd.conf"; }

SCRIPT=proftpd.sh
# shellcheck source=lib.sh
. "$HERE/lib.sh"

stop() {
  rm -f "$ENVFILE"
  local n
  for n in "${NAMES[@]}"; do stop_one "$n" "$(pidfile "$n")" proftpd; done
}

status() {
  local n pid st running=0 port
  for n in "${NAMES[@]}"; do
    pid= st=
    [ -f "$(pidfile "$n")" ] && read -r pid st <"$(pidfile "$n")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid" "$st" proftpd; then
      port=$(sed -n 's/^Port //p' "$(conffile "$n")" 2>/dev/null)
      echo "$n: running, pid $pid, 127.0.0.1:$port"
      running=$((running + 1))
    else
      echo "$n: not running"
    fi
  done
  [ "$running" -eq ${#NAMES[@]} ] || return 3
  echo "settings in $ENVFILE"
}

# Downloads and unpacks the .debs once (marker: proftpd-pkg/.installed, which
# lists what was unpacked, with versions). Delete proftpd-pkg to refetch.
ensure_packages() {
  command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
  [ -f "$PKG/.installed" ] && [ -x "$PROFTPD" ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found"
  local want=("${PACKAGES[@]}") p
  for p in "${LIB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || want+=("$p")
  done
  echo "proftpd.sh: downloading ${want[*]} into $PKG (unpacked, not installed)" >&2
  rm -rf "$PKG"
  mkdir -p "$PKG/debs"
  # -o APT::Sandbox::User=root: the _apt user cannot write into target/.
  if ! (cd "$PKG/debs" && apt-get download -q -o APT::Sandbox::User=root "${want[@]}" >/dev/null); then
    apt-get update -qq || die "apt-get update failed"
    (cd "$PKG/debs" && apt-get download -q -o APT::Sandbox::User=root "${want[@]}" >/dev/null) ||
      die "apt-get download ${want[*]} failed"
  fi
  local deb missing
  for deb in "$PKG"/debs/*.deb; do dpkg -x "$deb" "$PKGROOT" || die "dpkg -x $deb failed"; done
  missing=$(LD_LIBRARY_PATH=$LIBDIR ldd "$PROFTPD" "$PKGROOT"/usr/lib/proftpd/*.so 2>&1 | grep 'not found' | sort -u || true)
  [ -z "$missing" ] || die "libraries still missing after unpacking (add their packages to LIB_PACKAGES): $missing"
  for deb in "$PKG"/debs/*.deb; do dpkg-deb -f "$deb" Package Version | sed 's/^[^:]*: //' | paste -sd' '; done >"$PKG/.installed"
}

# In target/servers/proftpd/tls/, new at every start: lib.sh's
# make_test_ca with an RSA leaf, and selfsigned.pem + selfsigned-key.pem:
# what Debian's proftpd-gencert makes (`openssl req -x509 -newkey rsa:2048
# -nodes`, so CA:TRUE, no SAN), with -subj instead of its questions.
make_certs() {
  make_test_ca "$TLS" rsa "proftpd "
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS/selfsigned-key.pem" -out "$TLS/selfsigned.pem" \
    -days 365 -subj /CN=127.0.0.1 2>/dev/null || die "openssl req -x509 failed"
  chmod 0600 "$TLS"/*key*.pem
}

random_password() {
  local p
  p=$(head -c 300 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  [ ${#p} -ge 24 ] || die "could not make a password"
  echo "${p:0:24}"
}

# Replaces the one line of FILE that is exactly FROM with TO (which may hold
# several lines); fails unless FROM occurs exactly once, so a changed Debian
# template stops the script instead of silently giving another config.
replace_line() { # FILE FROM TO
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  if ! awk -v from="$2" -v to="$3" '
      $0 == from { print to; n++; next } { print }
      END { exit n == 1 ? 0 : 1 }' "$1" >"$tmp"; then
    rm -f "$tmp"
    die "$(basename "$1"): expected exactly one line '$2' in Debian's template"
  fi
  cat "$tmp" >"$1"
  rm -f "$tmp"
}

# Writes target/servers/proftpd/NAME/{proftpd.conf,modules.conf,tls.conf,conf.d/}
# from the package's templates (what Debian installs as /etc/proftpd/*).
# `diff TEMPLATE GENERATED` shows every change; README lists them.
make_config() { # NAME PORT CERT KEY DEFAULTROOT
  local name=$1 port=$2 cert=$3 key=$4 root=$5 cd pasv
  cd=$PD/$name
  rm -rf "$cd"
  mkdir -p "$cd/conf.d"
  cp "$TEMPLATES/proftpd.conf" "$TEMPLATES/modules.conf" "$TEMPLATES/tls.conf" "$cd/"
  read -ra pasv <<<"${PASV[$name]}"

  replace_line "$cd/proftpd.conf" 'Include /etc/proftpd/modules.conf' "Include $cd/modules.conf"
  replace_line "$cd/proftpd.conf" '# DefaultRoot ~' "DefaultRoot $root"
  replace_line "$cd/proftpd.conf" 'Port 21' "Port $port"
  replace_line "$cd/proftpd.conf" '# PassivePorts 49152 65534' "PassivePorts ${pasv[0]} ${pasv[1]}"
  replace_line "$cd/proftpd.conf" 'User proftpd' "User $DAEMON_USER"
  replace_line "$cd/proftpd.conf" 'TransferLog /var/log/proftpd/xferlog' "TransferLog $DIR/$name-xfer.log"
  replace_line "$cd/proftpd.conf" 'SystemLog /var/log/proftpd/proftpd.log' "SystemLog $(logfile "$name")"
  # ControlsEngine is off, but proftpd opens ControlsLog anyway (fatal if
  # /var/log/proftpd is missing). ControlsSocket is not opened, so it stays.
  replace_line "$cd/proftpd.conf" 'ControlsLog /var/log/proftpd/controls.log' "ControlsLog $DIR/$name-controls.log"
  replace_line "$cd/proftpd.conf" '#Include /etc/proftpd/tls.conf' "Include $cd/tls.conf"
  replace_line "$cd/proftpd.conf" 'Include /etc/proftpd/conf.d/' "Include $cd/conf.d/"

  replace_line "$cd/modules.conf" 'ModulePath /usr/lib/proftpd' "ModulePath $PKGROOT/usr/lib/proftpd"
  replace_line "$cd/modules.conf" '#LoadModule mod_tls.c' 'LoadModule mod_tls.c'

  replace_line "$cd/tls.conf" '#TLSEngine                               on' 'TLSEngine                               on'
  replace_line "$cd/tls.conf" '#TLSLog                                  /var/log/proftpd/tls.log' \
    "TLSLog                                  $DIR/$name-tls.log"
  replace_line "$cd/tls.conf" '#TLSRSACertificateFile                   /etc/ssl/certs/proftpd.crt' \
    "TLSRSACertificateFile                   $cert"
  replace_line "$cd/tls.conf" '#TLSRSACertificateKeyFile                /etc/ssl/private/proftpd.key' \
    "TLSRSACertificateKeyFile                $key"

  # What a Debian admin would add in /etc/proftpd/conf.d/: the address, and
  # the files the package keeps under /run (two instances must not share
  # them). WtmpLog off: do not write the machine's /var/log/wtmp.
  cat >"$cd/conf.d/offsite-tests.conf" <<EOF
# Not in Debian's stock configuration; added for the offsite test server.
DefaultAddress 127.0.0.1
SocketBindTight on
PidFile $PD/$name/proftpd.pid
ScoreboardFile $PD/$name/proftpd.scoreboard
DelayTable $PD/$name/proftpd.delay
WtmpLog off
EOF
  LD_LIBRARY_PATH=$LIBDIR "$PROFTPD" -t -c "$cd/proftpd.conf" >"$cd/configtest.out" 2>&1 ||
    { cat "$cd/configtest.out" >&2; die "proftpd -t rejects $cd/proftpd.conf"; }
}

# True once a server on 127.0.0.1:$1 greets with 220.
greets() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 2 line <&3 && [[ "$line" == 220* ]]
  ) 2>/dev/null
}

wait_ready() { # NAME PID PORT
  wait_until_ready "$1" "$2" "$(logfile "$1")" greets "$3"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (proftpd chroots and switches users)"
  command -v python3 >/dev/null || die "python3 not found"
  mkdir -p "$DIR" "$PD"
  stop
  ensure_packages
  make_certs

  getent passwd "$DAEMON_USER" >/dev/null ||
    useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$DAEMON_USER" || die "useradd $DAEMON_USER failed"
  # The login: a system user, authenticated as Debian's proftpd does it by
  # default (PAM, then /etc/passwd + /etc/shadow). Its shell must be listed
  # in /etc/shells (stock RequireValidShell). Its home is the main data root
  # (DefaultRoot ~ makes that the chroot, "/" over FTP); the password is new
  # at every start (chpasswd also unlocks the account).
  getent passwd "$FTP_USER" >/dev/null ||
    useradd -r -M -d "$PD/proftpd-data" -s /bin/sh "$FTP_USER" || die "useradd $FTP_USER failed"
  local pass uid gid
  pass=$(random_password)
  echo "$FTP_USER:$pass" | chpasswd || die "chpasswd failed"
  uid=$(id -u "$FTP_USER")
  gid=$(id -g "$FTP_USER")

  # Fresh, empty data roots at every start, owned by the login user.
  # proftpd resolves the DefaultRoot as that user, so every parent folder
  # must be searchable by it: under target/ if it can get there, else
  # under /srv.
  local base n data=
  for base in "$PD" "/srv/offsite-test-proftpd/${ROOT//[^A-Za-z0-9]/_}"; do
    for n in "${NAMES[@]}"; do
      rm -rf "${base:?}/$n-data"
      install -d -m 0755 -o "$uid" -g "$gid" "$base/$n-data"
    done
    if runuser -u "$FTP_USER" -- test -w "$base/proftpd-data" -a -x "$base/proftpd-data"; then
      data=$base
      break
    fi
    echo "proftpd.sh: $FTP_USER cannot reach $base (permissions of a parent folder?)" >&2
    for n in "${NAMES[@]}"; do rm -rf "${base:?}/$n-data"; done
  done
  [ -n "$data" ] || die "no folder the user $FTP_USER can reach"
  # usermod refuses while the user has processes (say another checkout's
  # sessions): then only warn.
  if [ "$(getent passwd "$FTP_USER" | cut -d: -f6)" != "$data/proftpd-data" ]; then
    usermod -d "$data/proftpd-data" "$FTP_USER" 2>/dev/null ||
      echo "proftpd.sh: warning: usermod -d $data/proftpd-data $FTP_USER failed" >&2
  fi

  local ports
  ports=$(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
  local -A port
  read -r "port[proftpd]" "port[proftpd-selfsigned]" <<<"$ports"

  # The self-signed instance chroots to its own folder instead of ~.
  make_config proftpd "${port[proftpd]}" "$TLS/leaf.pem" "$TLS/leaf-key.pem" '~'
  make_config proftpd-selfsigned "${port[proftpd-selfsigned]}" "$TLS/selfsigned.pem" "$TLS/selfsigned-key.pem" \
    "$data/proftpd-selfsigned-data"

  local -A pid
  local st
  for n in "${NAMES[@]}"; do
    : >"$(logfile "$n")"
    : >"$DIR/$n-tls.log"
    # -n: stay in the foreground. It logs to SystemLog; stderr (startup
    # errors before the log is open) goes to the same file.
    LD_LIBRARY_PATH=$LIBDIR setsid "$PROFTPD" -n -c "$(conffile "$n")" </dev/null >>"$(logfile "$n")" 2>&1 &
    pid[$n]=$!
    st=$(stat_field "${pid[$n]}" 22) || st=0
    echo "${pid[$n]} $st" >"$(pidfile "$n")"
  done
  # From here on, a failure stops both servers again.
  trap 'echo "proftpd.sh: start failed" >&2; stop' ERR
  for n in "${NAMES[@]}"; do wait_ready "$n" "${pid[$n]}" "${port[$n]}"; done

  local tmp fp
  fp=$(openssl x509 -noout -fingerprint -sha256 -in "$TLS/selfsigned.pem")
  fp=${fp#*=}
  tmp=$(mktemp "$DIR/.proftpd.env.XXXXXX")
  cat >"$tmp" <<EOF
PROFTPD_HOST=127.0.0.1
PROFTPD_PORT=${port[proftpd]}
PROFTPD_USER=$FTP_USER
PROFTPD_PASSWORD=$pass
PROFTPD_ROOT=$data/proftpd-data
PROFTPD_CA_FILE=$TLS/ca.pem
PROFTPD_OTHER_CA_FILE=$TLS/other-ca.pem
PROFTPD_LOG=$(logfile proftpd)
PROFTPD_TLS_LOG=$DIR/proftpd-tls.log
PROFTPD_SELFSIGNED_PORT=${port[proftpd-selfsigned]}
PROFTPD_SELFSIGNED_USER=$FTP_USER
PROFTPD_SELFSIGNED_PASSWORD=$pass
PROFTPD_SELFSIGNED_ROOT=$data/proftpd-selfsigned-data
PROFTPD_SELFSIGNED_CERT_FILE=$TLS/selfsigned.pem
PROFTPD_SELFSIGNED_SHA256=$fp
EOF
  mv -f "$tmp" "$ENVFILE"
  trap - ERR
  echo "proftpd.sh: proftpd pid ${pid[proftpd]} on 127.0.0.1:${port[proftpd]} (CA-signed)," \
    "proftpd-selfsigned pid ${pid[proftpd-selfsigned]} on 127.0.0.1:${port[proftpd-selfsigned]}" \
    "(self-signed); plain FTP or explicit TLS; settings in $ENVFILE" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
