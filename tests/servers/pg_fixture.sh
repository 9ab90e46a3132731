#!/usr/bin/env bash
# Test databases on the server of tests/servers/postgres.sh, and checksums to
# compare a restored database with its source.
#   tests/servers/pg_fixture.sh populate DB SCALE [RANDOM_MB]
#   tests/servers/pg_fixture.sh checksums DB
#   tests/servers/pg_fixture.sh drop DB
# Connection: PGHOST, PGPORT, PGUSER and PG_BIN from the environment, each one
# not set there from target/servers/postgres.env (so PGPORT=... points it at
# another server, say a restored copy). See tests/servers/README.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ENVFILE=${PG_ENV_FILE:-$ROOT/target/servers/postgres.env}

die() { echo "pg_fixture.sh: $*" >&2; exit 1; }

if [ -f "$ENVFILE" ]; then
  while IFS='=' read -r k v; do
    [[ "$k" =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
    [ -n "${!k+x}" ] || export "$k=$v"
  done <"$ENVFILE"
fi
for k in PGHOST PGPORT PGUSER PG_BIN; do
  [ -n "${!k:-}" ] || die "$k is not set and not in $ENVFILE (is tests/servers/postgres.sh running?)"
done
export PGHOST PGPORT PGUSER
# The same text forms of values on every run and for every server.
export PGCLIENTENCODING=UTF8 PGTZ=UTC PGDATESTYLE=ISO,YMD
export PGOPTIONS='-c client_min_messages=warning -c extra_float_digits=1 -c bytea_output=hex -c intervalstyle=postgres'
unset PGDATABASE PGSERVICE

psql_() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

exists() { # DB
  [ "$(echo "select count(*) from pg_database where datname = :'db'" | psql_ -At -d postgres -v db="$1")" = 1 ]
}

# Unicode samples, NUL-free, written as escapes so this file stays ASCII:
# precomposed and combining accents, CJK, Hangul, emoji with a skin tone, a
# ZWJ family and a flag, "zalgo" stacked combining marks, Arabic and Hebrew
# (right to left), mathematical letters (astral plane), BOM, NBSP, zero-width
# space, U+FFFD, a plane-16 private-use character, and the ASCII characters
# COPY and CSV escape (tab, newline, CR, backslash, quotes, comma).
SAMPLES="ARRAY[
  E'plain ascii',
  E'caf\\u00e9 na\\u00efve r\\u00e9sum\\u00e9 \\u00c5ngstr\\u00f6m',
  E'cafe\\u0301 nai\\u0308ve A\\u030angstro\\u0308m',
  E'\\u65e5\\u672c\\u8a9e\\u306e\\u30c6\\u30ad\\u30b9\\u30c8',
  E'\\u4e2d\\u6587\\u5b57\\u7b26 \\ud55c\\uad6d\\uc5b4',
  E'\\U0001F600\\U0001F389\\U0001F44D\\U0001F3FD\\U0001F9EC',
  E'\\U0001F468\\u200D\\U0001F469\\u200D\\U0001F467\\u200D\\U0001F466 \\U0001F1EB\\U0001F1F7',
  E'Z\\u0324\\u0354\\u0367\\u0311\\u0313a\\u0308\\u0356\\u032dl\\u036e\\u0312\\u036bg\\u0317\\u031a\\u035ao\\u0319\\u0314',
  E'\\u0645\\u0631\\u062d\\u0628\\u0627 \\u05e9\\u05dc\\u05d5\\u05dd',
  E'\\U0001D518\\U0001D52B\\U0001D526\\U0001D520\\U0001D52C\\U0001D521\\U0001D522',
  E'\\uFEFFbom\\u00A0nbsp\\u200Bzw \\uFFFD \\U0010FFFD',
  E'tab\\there\\nnewline\\r\\\\backslash ''single'' \"double\" ,comma (paren) \\\\N'
]"

# N random bytes, made on the server (random() is volatile: new for each row).
rand_bytes() { # SQL expression for the count
  echo "(select substring(decode(coalesce(string_agg(md5(random()::text), ''), ''), 'hex') from 1 for ($1))
           from generate_series(1, ($1) / 16 + 1))"
}

populate() { # DB SCALE [RANDOM_MB]
  local db=$1 scale=$2 mb=${3:-0}
  [[ "$scale" =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive integer"
  [[ "$mb" =~ ^[0-9]+$ ]] || die "RANDOM_MB must be a non-negative integer"
  exists "$db" && die "database $db exists already (pg_fixture.sh drop $db)"
  "$PG_BIN/createdb" "$db"
  # pgbench_accounts (100000 rows per scale), _branches, _tellers with
  # primary keys, and an empty pgbench_history without one.
  "$PG_BIN/pgbench" -q -i -s "$scale" "$db"
  psql_ -d "$db" <<SQL
create table extra (id int primary key, t text, b bytea);
insert into extra
  select i,
         s[1 + i % cardinality(s)] || ' #' || i || ' ' || repeat(s[1 + (i * 7 + 3) % cardinality(s)], i % 5),
         $(rand_bytes '(i * 37) % 2049')
    from generate_series(1, 1000) i, (select $SAMPLES s) x;
-- Edge rows: empty values; NULLs; every byte value once, and every sample;
-- values large enough to be TOASTed (~350 kB of text, 1 MiB of random bytes).
insert into extra values (0, '', '\\x'), (1001, null, null);
insert into extra
  select 1002, array_to_string(s, '|'),
         (select decode(string_agg(lpad(to_hex(v), 2, '0'), '' order by v), 'hex') from generate_series(0, 255) v)
    from (select $SAMPLES s) x;
insert into extra
  select 1003, repeat(array_to_string(s, '|'), 1500), $(rand_bytes 1048576)
    from (select $SAMPLES s) x;
analyze extra;
SQL
  if [ "$mb" -gt 0 ]; then
    # Incompressible bulk: one row of 1 MiB of random bytes per MiB, made
    # here and sent with COPY (bytea in hex: "\\x" + 2 hex digits per byte).
    psql_ -d "$db" -c 'create table blobs (id int primary key, b bytea)'
    python3 -c '
import os, sys
out = sys.stdout.buffer
for i in range(1, int(sys.argv[1]) + 1):
    out.write(b"%d\t\\\\x%s\n" % (i, os.urandom(1 << 20).hex().encode()))
' "$mb" | psql_ -d "$db" -c 'copy blobs from stdin'
    psql_ -d "$db" -c 'analyze blobs'
  fi
  echo "pg_fixture.sh: populated $db (scale $scale, random $mb MiB): $(psql_ -At -d "$db" -c "select pg_size_pretty(pg_database_size(current_database()))")" >&2
}

# One line per user table: "<table> <md5>", the md5 of the table's rows as
# text (ROW(r.*)::text, the form the row would have as "r::text"), one row a
# line in COPY's text format, in primary-key order; a table without a primary
# key is ordered by that row text itself (byte order, COLLATE "C"), which is
# total for any column types. Streamed through md5sum: no size limit (a
# server-side md5(string_agg(...)) fails once the text passes 1 GB). Tables
# are sorted by schema and name; the name is printed as regclass (schema-
# qualified when not on the search path).
checksums() { # DB
  local db=$1 rel name keys order sum
  exists "$db" || die "no database $db"
  psql_ -At -F $'\t' -d "$db" <<'SQL' |
select quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.oid::regclass::text,
       coalesce((select string_agg('r.' || quote_ident(a.attname), ', ' order by k.ord)
                   from pg_index i
                   cross join unnest(i.indkey) with ordinality k(attnum, ord)
                   join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                  where i.indrelid = c.oid and i.indisprimary), '')
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind = 'r' and n.nspname <> 'information_schema' and n.nspname !~ '^pg_'
 order by n.nspname collate "C", c.relname collate "C"
SQL
    while IFS=$'\t' read -r rel name keys; do
      order=${keys:-'row(r.*)::text collate "C"'}
      sum=$(psql_ -d "$db" -c "copy (select row(r.*)::text from $rel r order by $order) to stdout" </dev/null | md5sum)
      echo "$name ${sum%% *}"
    done
}

drop() { # DB
  psql_ -d postgres -c "drop database if exists \"${1//\"/\"\"}\" with (force)"
}

case "${1:-}" in
  populate) [ $# -ge 3 ] && [ $# -le 4 ] || die "usage: $0 populate DB SCALE [RANDOM_MB]"; populate "$2" "$3" "${4:-0}" ;;
  checksums) [ $# -eq 2 ] || die "usage: $0 checksums DB"; checksums "$2" ;;
  drop) [ $# -eq 2 ] || die "usage: $0 drop DB"; drop "$2" ;;
  *) die "usage: $0 populate DB SCALE [RANDOM_MB] | checksums DB | drop DB" ;;
esac
