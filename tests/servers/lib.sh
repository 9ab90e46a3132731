# What the server scripts share (sourced, not run): telling our own process
# from another that got its PID, and stopping one by the PID it was started
# with. The sourcing script sets SCRIPT (its name, for messages) and die().

# Field N (N >= 3) of /proc/PID/stat; the fields after the command name.
stat_field() { # PID N
  local s f
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  read -ra f <<<"$s"
  echo "${f[$(($2 - 3))]}"
}

# True if $1 is live, started at clock tick $2 (field 22 of its stat, kept
# in the pid file), and its command line contains $3. Servers that rewrite
# their command line (pure-ftpd, proftpd) keep a part of it; the start time
# is what guards against PID reuse.
is_ours() { # PID STARTTIME TEXT
  kill -0 "$1" 2>/dev/null &&
    [ "$(stat_field "$1" 22)" = "$2" ] &&
    tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$3"
}

# Stops the server whose "PID STARTTIME" is in PIDFILE, if it is still ours:
# TERM, then KILL after 5 s, to its process group when it leads one
# (started by setsid: the session processes it forks are in that group and
# outlive a TERM to the server alone). Removes PIDFILE.
stop_one() { # NAME PIDFILE TEXT
  local name=$1 pidfile=$2 text=$3 pid= st= target
  [ -f "$pidfile" ] || return 0
  read -r pid st <"$pidfile" || true
  if [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid" "$st" "$text"; then
    target=$pid
    [ "$(stat_field "$pid" 5)" = "$pid" ] && target=-$pid
    kill -TERM -- "$target" 2>/dev/null || true
    for _ in $(seq 50); do is_ours "$pid" "$st" "$text" || break; sleep 0.1; done
    if is_ours "$pid" "$st" "$text"; then
      echo "$SCRIPT: $name pid $pid ignored TERM for 5 s, sending KILL" >&2
      kill -KILL -- "$target" 2>/dev/null || true
      for _ in $(seq 20); do is_ours "$pid" "$st" "$text" || break; sleep 0.1; done
      is_ours "$pid" "$st" "$text" && die "$name pid $pid is still alive after KILL"
    fi
    echo "$SCRIPT: stopped $name pid $pid" >&2
  fi
  rm -f "$pidfile"
}

# Waits up to 15 s until PROBE (a command, with its arguments) succeeds,
# failing early with the end of LOG when PID (a child of this shell) dies.
wait_until_ready() { # NAME PID LOG PROBE [ARGS...]
  local name=$1 pid=$2 log=$3 deadline=$((SECONDS + 15)) rc
  shift 3
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rc=0
      wait "$pid" || rc=$?
      echo "$SCRIPT: $name exited during startup (status $rc); log tail:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    [ "$SECONDS" -lt "$deadline" ] || { echo "$SCRIPT: $name is not ready after 15 s ($*)" >&2; return 1; }
    sleep 0.1
  done
}

# A private CA and a leaf for 127.0.0.1 signed by it (an end-entity
# certificate: rustls refuses a CA certificate as a server's), and a second
# CA that signed nothing, in a new folder DIR: ca.pem, other-ca.pem (EC
# P-256), leaf.pem + leaf-key.pem (KEY: "ec" for P-256, "rsa" for RSA 2048,
# as servers that only load RSA keys need), keys 0600. ~0.1 s.
make_test_ca() { # DIR KEY LABEL
  local dir=$1 key=$2 label=$3 usage=digitalSignature leafkey ca
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  case $key in
    ec) leafkey=("${ec[@]}") ;;
    rsa) leafkey=(-newkey rsa:2048 -nodes) usage="digitalSignature, keyEncipherment" ;;
    *) die "make_test_ca: key is ec or rsa, not $key" ;;
  esac
  rm -rf "$dir"
  mkdir -p "$dir"
  cat >"$dir/ext.cnf" <<CNF
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, $usage
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF
  for ca in ca other-ca; do
    openssl req -x509 "${ec[@]}" -keyout "$dir/$ca-key.pem" -out "$dir/$ca.pem" \
      -subj "/O=offsite tests/CN=offsite test $label$ca" -days 365 -config "$dir/ext.cnf" -extensions ca 2>/dev/null
  done
  openssl req -new "${leafkey[@]}" -keyout "$dir/leaf-key.pem" -out "$dir/leaf.csr" -subj /CN=127.0.0.1 2>/dev/null
  openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days 365 -extfile "$dir/ext.cnf" -extensions leaf \
    -out "$dir/leaf.pem" 2>/dev/null
  chmod 0600 "$dir"/*key*.pem
  openssl verify -x509_strict -CAfile "$dir/ca.pem" "$dir/leaf.pem" >/dev/null || die "the new leaf does not verify"
}
