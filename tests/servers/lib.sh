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
