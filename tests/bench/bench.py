#!/usr/bin/env python3
"""offsite's benchmark: staging and uploads, against the tools people use instead.

    python3 tests/bench/bench.py [--runs N] [--quick] [--scale N] [--no-scale | --scale-only]

Run by `make bench`, which installs the tools, builds the release binary and
starts the SFTP (tests/servers/sshd.sh) and S3 (tests/servers/moto.sh, and
s3s-fs: tests/servers/s3s.sh) servers this script reads from
target/servers/*.env. Without s3s.env, the s3s-fs scenario is skipped (a note
says so).

What it measures, each as a subprocess (wall time with time.monotonic(),
peak RSS with os.wait4(); a pipeline's peaks are added), --runs times,
reporting the median time and the largest peak RSS:

  staging  offsite backup --no-upload | tar -cf - | zstd -T0 -3 | restic backup
  SFTP     offsite upload | rclone copy | OpenSSH sftp -b (mkdir + put)
  S3       offsite upload | rclone copy (16 MiB parts, 4 at a time), to moto
           ("upload s3") and to s3s-fs ("upload s3 (s3s-fs)"), whose costs
           differ: moto spends CPU per request, s3s-fs writes files and
           copies every part again in CompleteMultipartUpload
           (tests/servers/README.md)
  restore  offsite restore from a folder | zstd -dc | tar -x, then sync: the
           dataset's backup, and 50,000 files of 200 bytes
  cluster  offsite list of a 50-member cluster job with 200 sets (index
           markers put on moto with rclone): seconds, and requests counted
           by a proxy in front of moto
  incremental  offsite backup --incremental | restic's second backup, after
           2,000 random 8 KiB pages written in place over 1 GiB of files,
           and after 15 s of pgbench on PostgreSQL (when installed): seconds,
           and the bytes stored beside those of the pages that changed

on a generated, seeded data directory shaped like EventStoreDB's (chunk files,
index/, *.chk) under target/bench/data-<N>x, read once before timing so every
tool finds it in the page cache. Then offsite alone on a dataset 4 times
larger, to see that its memory does not grow with the data. Prints a table
and the targets on stdout, progress on stderr, and writes everything to
target/bench/results.json (results-quick.json for --quick,
results-scale-only.json for --scale-only). Exits 0 when the bench ran (a
missed target does not fail it), 1 when a tool failed (its stderr tail is
printed), 2 on usage or setup errors.

Python standard library only.
"""

import argparse
import base64
import json
import os
import platform
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "target" / "bench"
RUNS = BENCH / "runs"
LOGS = BENCH / "logs"
SERVERS = ROOT / "target" / "servers"

KiB = 1 << 10
MiB = 1 << 20
BLOCK = MiB  # the generator writes in blocks of this size

SEED = 20261122
DATASET_FORMAT = 1  # bump when the generator changes: datasets are rebuilt
# offsite's upload defaults (docs/configuration.md): the memory target.
PART_SIZE = 16 * MiB
CONCURRENCY = 4
RSS_HEADROOM = 64 * MiB
RSS_LIMIT = PART_SIZE * CONCURRENCY + RSS_HEADROOM
JOB = "bench"
RESTIC_PASSWORD = "offsite-bench-not-a-secret"
TIMEOUT = 3600  # seconds for any one command before it is killed
# The cluster list scenario: a set a day for this many days, of this many members.
CLUSTER_MEMBERS = 50
CLUSTER_SETS = 200
# The small-files restore scenario: this many files of 200 bytes.
SMALL_FILES = 50_000
# The S3 upload on the second S3 server (tests/servers/s3s.sh), a task of its own.
S3S_TASK = "upload s3 (s3s-fs)"
S3S_BIN = SERVERS / "s3s" / "bin" / "s3s-fs"
# The block-level incremental scenarios: files of random pages changed in
# place (INCR_FILES x INCR_FILE_SIZE = 1 GiB, INCR_PAGES random 8 KiB page
# writes), and pgbench on PostgreSQL.
INCR_FILES = 8
INCR_FILE_SIZE = 128 * MiB
INCR_PAGES = 2000
PGBENCH_SCALE = 20
PGBENCH_SECONDS = 15


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ToolFailed(Exception):
    """A measured or setup command failed: its label, exit codes and stderr tail."""


# --------------------------------------------------------------------------
# The dataset


def dataset_params(scale, quick):
    if quick:
        # About 64 MiB: 6 chunks of 8 MiB, 20 index files of 0.75 MiB.
        p = {"chunk_size": 8 * MiB, "chunks": 6 * scale, "index_files": 20, "index_size": 768 * KiB}
    else:
        # About 800 MiB: 6 chunks of 128 MiB, 20 index files of 1.5 MiB.
        p = {"chunk_size": 128 * MiB, "chunks": 6 * scale, "index_files": 20, "index_size": 1536 * KiB}
    p.update(format=DATASET_FORMAT, seed=SEED, scale=scale, quick=quick, checkpoints=4, checkpoint_size=8)
    return p


def dataset_name(scale, quick):
    return f"data-{'quick-' if quick else ''}{scale}x"


def compressible(rng, first, size):
    """`size` bytes of event-like JSON lines, numbered from `first`: zstd -3 packs them about 8:1."""
    types = (b"OrderPlaced", b"OrderPaid", b"OrderShipped", b"ItemAdded", b"ItemRemoved")
    lines = []
    n = 0
    total = 0
    base = rng.randrange(1 << 20)
    while total < size:
        i = first + n
        line = b'{"stream":"order-%07d","type":"%s","version":%d,"data":{"sku":"SKU-%05d","qty":%d,"price":%d.%02d}}\n' % (
            base + i // 7, types[i % 5], i % 7, (i * 7919) % 100000, i % 9 + 1, i % 500, i % 100)
        lines.append(line)
        total += len(line)
        n += 1
    return b"".join(lines)[:size], n


def write_chunk(path, rng, size):
    """Blocks of half random bytes and half event lines: zstd -3 gives about 2:1."""
    half = BLOCK // 2
    record = 0
    with open(path, "wb") as f:
        left = size
        while left > 0:
            text, n = compressible(rng, record, half)
            record += n
            block = rng.randbytes(half) + text
            f.write(block[:left])
            left -= len(block)


def write_index(path, rng, size):
    """Mostly random (a ptable of hashes): 7/8 random, 1/8 zeros per block."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(BLOCK, left)
            r = n - n // 8
            f.write(rng.randbytes(r) + bytes(n - r))
            left -= n


def dataset_files(p):
    """(relative path, size) of every file the parameters describe."""
    files = [(f"{name}.chk", p["checkpoint_size"]) for name in ("chaser", "epoch", "truncate", "writer")][: p["checkpoints"]]
    rng = random.Random(f"{p['seed']}:index-names")
    files += [(f"index/{uuid.UUID(int=rng.getrandbits(128), version=4)}", p["index_size"]) for _ in range(p["index_files"])]
    files += [(f"chunk-{i:06d}.000000", p["chunk_size"]) for i in range(p["chunks"])]
    return files


def ensure_dataset(scale, quick):
    """Builds target/bench/data-<N>x unless its marker says it is already there with these parameters."""
    p = dataset_params(scale, quick)
    name = dataset_name(scale, quick)
    data = BENCH / name
    marker = BENCH / f"{name}.params.json"
    files = dataset_files(p)
    total = sum(s for _, s in files)
    if marker.exists():
        try:
            same = json.loads(marker.read_text()) == p
        except ValueError:
            same = False
        if same and all((data / rel).is_file() and (data / rel).stat().st_size == s for rel, s in files):
            log(f"dataset {name}: {total / MiB:.0f} MiB in {len(files)} files, already there ({marker.name})")
            return data, total, len(files)
    log(f"dataset {name}: generating {total / MiB:.0f} MiB in {len(files)} files (seed {SEED})")
    marker.unlink(missing_ok=True)
    shutil.rmtree(data, ignore_errors=True)
    (data / "index").mkdir(parents=True)
    t0 = time.monotonic()
    for rel, size in files:
        rng = random.Random(f"{p['seed']}:{rel}")
        path = data / rel
        if rel.endswith(".chk"):
            path.write_bytes(rng.randrange(1 << 40).to_bytes(size, "little"))
        elif rel.startswith("index/"):
            write_index(path, rng, size)
        else:
            write_chunk(path, rng, size)
    os.sync()
    marker.write_text(json.dumps(p, indent=1) + "\n")
    log(f"dataset {name}: generated in {time.monotonic() - t0:.1f} s")
    return data, total, len(files)


def warm(data):
    """Reads every file once (cat to /dev/null) so every tool starts from a warm page cache."""
    files = sorted(str(p) for p in data.rglob("*") if p.is_file())
    t0 = time.monotonic()
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
    log(f"page cache: read {data.name} once (cat to /dev/null) in {time.monotonic() - t0:.1f} s; every tool starts warm")


# --------------------------------------------------------------------------
# Running and measuring


def tail(path, lines=20):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def measure(label, cmds, env=None, cwd=None):
    """Runs a pipeline of commands (argv lists, each one's stdout into the next's stdin).

    Returns {"seconds", "rss_kib", "stdout"}: the wall time from the first
    start to the last exit, the sum of the processes' peak RSS (each one's
    ru_maxrss from wait4, which also covers the children it waited for), and
    the last command's stdout. Raises ToolFailed if any exits non-zero.
    """
    LOGS.mkdir(parents=True, exist_ok=True)
    out_path = LOGS / f"{label}.out"
    err_paths = [LOGS / (f"{label}.err" if len(cmds) == 1 else f"{label}.{i}.err") for i in range(len(cmds))]
    os.sync()  # the previous run's writes are not flushed on this one's time
    procs = []
    timer = None
    killed = []

    def kill_all():
        killed.append(True)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass

    try:
        with open(out_path, "wb") as out:
            t0 = time.monotonic()
            prev = None
            for i, argv in enumerate(cmds):
                with open(err_paths[i], "wb") as err:
                    p = subprocess.Popen(
                        argv,
                        stdin=prev.stdout if prev else subprocess.DEVNULL,
                        stdout=out if i == len(cmds) - 1 else subprocess.PIPE,
                        stderr=err,
                        env=env,
                        cwd=cwd,
                        start_new_session=True,
                    )
                if prev:
                    prev.stdout.close()
                procs.append(p)
                prev = p
            timer = threading.Timer(TIMEOUT, kill_all)
            timer.daemon = True
            timer.start()
            rss = 0
            codes = []
            for p in procs:
                _, status, usage = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                codes.append(p.returncode)
                rss += usage.ru_maxrss
            seconds = time.monotonic() - t0
    finally:
        if timer:
            timer.cancel()
        for p in procs:
            if p.returncode is None:
                kill_all()
                p.wait()
    stdout = out_path.read_text(errors="replace")
    if any(codes) or killed:
        why = f"killed after {TIMEOUT} s" if killed else f"exit {codes}"
        msg = [f"{label}: {' | '.join(' '.join(map(str, c)) for c in cmds)}: {why}"]
        for i, e in enumerate(err_paths):
            t = tail(e)
            if t:
                msg.append(f"--- stderr{'' if len(cmds) == 1 else f' of command {i + 1}'} ({e}):\n{t}")
        if stdout.strip():
            msg.append(f"--- stdout ({out_path}):\n{tail(out_path)}")
        raise ToolFailed("\n".join(msg))
    return {"seconds": seconds, "rss_kib": rss, "stdout": stdout}


def run(argv, env=None, what=None, check=True):
    """An untimed helper command; its output is returned, a failure raises ToolFailed."""
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise ToolFailed(f"{what or argv[0]}: {' '.join(map(str, argv))}: exit {r.returncode}\n{r.stderr[-3000:]}{r.stdout[-2000:]}")
    return r


def version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else f"exit {r.returncode}"


def changed_pages(before, after):
    """The bytes of the 8 KiB pages of the files under `after` that differ
    from the same file under `before` (a new file counts whole)."""
    total = 0
    page = 8 * KiB
    for f in after.rglob("*"):
        if not f.is_file() or f.is_symlink():
            continue
        old = before / f.relative_to(after)
        try:
            a = open(f, "rb")
        except OSError:
            continue
        with a:
            b = open(old, "rb") if old.is_file() else None
            try:
                while True:
                    x = a.read(page)
                    if not x:
                        break
                    y = b.read(page) if b else b""
                    if x != y:
                        total += len(x)
            finally:
                if b:
                    b.close()
    return total


def folder_config(d, source, nas):
    """Writes d/offsite.toml: job JOB with `source` (a TOML inline table),
    staging in d/staging (made here), one folder destination `nas`."""
    cfg = d / "offsite.toml"
    cfg.write_text("\n".join([
        "[staging]", f"dir = {toml_str(d / 'staging')}", "",
        "[[job]]", f'name = "{JOB}"', f"source = {source}",
        'destinations = ["nas"]', "",
        "[destination.nas]", 'kind = "path"', f"path = {toml_str(nas)}", "",
    ]))
    (d / "staging").mkdir()
    return cfg


def read_env(path):
    if not path.exists():
        raise SystemExit(f"bench: {path} is missing: start the server first (tests/servers/{path.stem}.sh start)")
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def link_copy(src, dst):
    """A copy of the folder src whose large files are hard links (no data copied).

    Files under 1 MiB (manifests, status and lock files) are real copies, so
    whatever offsite rewrites in place never reaches the original.
    """
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in filenames:
            s = Path(dirpath) / f
            if s.stat().st_size >= MiB:
                os.link(s, dst / rel / f)
            else:
                shutil.copy2(s, dst / rel / f)


def tree_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------
# The benchmark


def toml_str(s):
    return json.dumps(str(s))  # a JSON string is a valid TOML basic string


class CountingProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream` (host:port) that counts
    the HTTP requests going through it, by their request lines."""

    METHODS = (b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ")

    def __init__(self, upstream):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.requests = {}
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()

    def pump(self, src, dst, upward):
        partial = b""  # what went up after its last line break
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if upward:
                lines = (partial + data).split(b"\r\n")
                partial = lines.pop()[-8192:]
                for line in lines:
                    if line.endswith(b" HTTP/1.1") and line.startswith(self.METHODS):
                        method = line.split(b" ", 1)[0].decode()
                        with self.lock:
                            self.requests[method] = self.requests.get(method, 0) + 1
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def take(self):
        """The requests counted since the last call, by method."""
        with self.lock:
            counts, self.requests = self.requests, {}
        return counts


class Bench:
    def __init__(self, args):
        self.args = args
        self.offsite = Path(args.offsite).resolve()
        self.sftp = read_env(SERVERS / "sshd.env")
        self.moto = read_env(SERVERS / "moto.env")
        self.results = []  # one row per (task, tool, dataset)
        self.notes = []
        self.cleanups = []
        # offsite's S3 credentials: moto's admin user, from the standard env vars.
        self.offsite_env = dict(os.environ)
        self.offsite_env.update(
            AWS_ACCESS_KEY_ID=self.moto["MOTO_ADMIN_ACCESS_KEY_ID"],
            AWS_SECRET_ACCESS_KEY=self.moto["MOTO_ADMIN_SECRET_ACCESS_KEY"],
            AWS_EC2_METADATA_DISABLED="true",
        )
        for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            self.offsite_env.pop(k, None)
        # rclone 1.60 refuses to make an S3 client at all when AWS_CA_BUNDLE is
        # set and its transport is its own ("LoadCustomCABundleError: unable to
        # load custom CA bundle, HTTPClient's transport unsupported type").
        # The endpoint is plain http anyway. The other CA variables
        # (SSL_CERT_FILE, ...) do not stop it. RCLONE_CONFIG: no config file.
        self.rclone_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE" and not k.startswith("RCLONE_")}
        self.rclone_env["RCLONE_CONFIG"] = "/dev/null"
        self.s3s_setup()

    # -- configs

    def config(self, path, staging, dataset, dests, prefix=None):
        """Writes an offsite config: one job `bench` over `dataset`, with these destinations."""
        s, m = self.sftp, self.moto
        lines = [
            "# Written by tests/bench/bench.py.",
            "[staging]",
            f"dir = {toml_str(staging)}",
            "",
            "[[job]]",
            f'name = "{JOB}"',
            f'source = {{ kind = "dir", path = {toml_str(dataset)}, order = ["*.chk", "index/**", "**"] }}',
            'compression = "zstd:3"',
            f"destinations = [{', '.join(toml_str(d) for d in dests)}]",
            "",
        ]
        if "sftp" in dests:
            lines += [
                "[destination.sftp]",
                'kind = "sftp"',
                f"host = {toml_str(s['SFTP_HOST'])}",
                f"port = {int(s['SFTP_PORT'])}",
                f"user = {toml_str(s['SFTP_USER'])}",
                f"key_file = {toml_str(s['SFTP_KEY_FILE'])}",
                f"known_hosts = {toml_str(s['SFTP_KNOWN_HOSTS'])}",
                f"path = {toml_str(s['SFTP_ROOT'])}",
            ]
            lines += [f"prefix = {toml_str(prefix)}"] if prefix else []
            lines += [""]
        if "s3" in dests:
            lines += [
                "[destination.s3]",
                'kind = "s3"',
                f"bucket = {toml_str(m['MOTO_BUCKET'])}",
                f"endpoint = {toml_str(m['MOTO_ENDPOINT'])}",
            ]
            lines += [f"prefix = {toml_str(prefix)}"] if prefix else []
            lines += [""]
        if "s3s" in dests:
            lines += self.s3s_destination(prefix)
        path.write_text("\n".join(lines))
        return path

    def rclone_s3(self):
        m = self.moto
        return ["--s3-provider", "Other", "--s3-endpoint", m["MOTO_ENDPOINT"], "--s3-region", "us-east-1",
                "--s3-access-key-id", m["MOTO_ADMIN_ACCESS_KEY_ID"],
                "--s3-secret-access-key", m["MOTO_ADMIN_SECRET_ACCESS_KEY"]]

    def rclone_sftp(self):
        s = self.sftp
        return ["--sftp-host", s["SFTP_HOST"], "--sftp-port", s["SFTP_PORT"], "--sftp-user", s["SFTP_USER"],
                "--sftp-key-file", s["SFTP_KEY_FILE"], "--sftp-known-hosts-file", s["SFTP_KNOWN_HOSTS"]]

    def s3_remote(self, prefix):
        return f":s3:{self.moto['MOTO_BUCKET']}/{prefix}"

    def s3_purge(self, prefix):
        run(["rclone", "purge", self.s3_remote(prefix), *self.rclone_s3()], env=self.rclone_env, what="rclone purge", check=False)

    def s3_bytes(self, prefix):
        r = run(["rclone", "size", "--json", self.s3_remote(prefix), *self.rclone_s3()], env=self.rclone_env, what="rclone size")
        return json.loads(r.stdout)["bytes"]

    def sftp_dir(self, name):
        return Path(self.sftp["SFTP_ROOT"]) / "bench" / name

    # -- rows

    def record(self, task, tool, size, runs, dataset, reference=None, extra=None):
        row = {
            "task": task, "tool": tool, "dataset": dataset, "bytes": size, "reference": reference,
            "runs": [{"seconds": round(r["seconds"], 3), "peak_rss_kib": r["rss_kib"]} for r in runs],
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "peak_rss_kib": max(r["rss_kib"] for r in runs),
        }
        row["mb_per_s"] = size / row["median_seconds"] / 1e6
        row.update(extra or {})
        self.results.append(row)
        return row

    def find(self, task, tool, dataset):
        for r in self.results:
            if (r["task"], r["tool"], r["dataset"]) == (task, tool, dataset):
                return r
        return None

    def progress(self, task, tool, i, n, m):
        log(f"{task} {tool} run {i}/{n}: {m['seconds']:.2f} s, peak RSS {m['rss_kib'] / KiB:.1f} MiB")

    # -- staging

    def stage_offsite(self, data, size, dataset, runs, keep_last):
        """offsite backup --no-upload into a fresh staging folder per run; the last one is kept (pristine)."""
        out = []
        for i in range(1, runs + 1):
            d = fresh(RUNS / f"stage-offsite-{dataset}-{i}")
            cfg = self.config(d / "offsite.toml", d / "staging", data, ["sftp", "s3"])
            (d / "staging").mkdir()
            m = measure(f"{dataset}-staging-offsite-{i}", [[self.offsite, "--config", cfg, "--json", "backup", "--no-upload"]],
                        env=self.offsite_env)
            doc = json.loads(m["stdout"])
            if doc.get("status") not in ("ok", "staged"):
                raise ToolFailed(f"offsite backup --no-upload: status {doc.get('status')!r}: {m['stdout'][-2000:]}")
            m["doc"] = doc
            self.progress("staging", "offsite", i, runs, m)
            out.append(m)
            if not (keep_last and i == runs):
                shutil.rmtree(d)
        doc = out[-1]["doc"]
        staged = doc["staged"]
        self.record("staging", "offsite", size, out, dataset, reference="tar | zstd",
                    extra={"staged_bytes": staged["bytes"], "stored_bytes": staged["stored_bytes"],
                           "compression_ratio": staged["bytes"] / max(1, staged["stored_bytes"])})
        return (RUNS / f"stage-offsite-{dataset}-{runs}") if keep_last else None, doc

    def stage_tar_zstd(self, data, size, dataset, runs, fsync=False):
        """tar | zstd -T0 -3 into a fresh file; with `fsync`, the file is
        fsync'd at the end, as offsite does its volumes: the same durability,
        for a fair second reference."""
        tool = "tar | zstd, fsync" if fsync else "tar | zstd"
        slug = "tar-zstd-fsync" if fsync else "tar-zstd"
        out = []
        for i in range(1, runs + 1):
            d = fresh(RUNS / f"stage-{slug}-{i}")
            f = d / "data.tar.zst"
            if fsync:
                cmds = [["sh", "-c", 'tar -cf - -C "$1" . | zstd -T0 -3 -q -o "$2" && sync "$2"', "sh",
                         str(data), str(f)]]
            else:
                cmds = [["tar", "-cf", "-", "-C", data, "."], ["zstd", "-T0", "-3", "-q", "-o", f]]
            m = measure(f"{dataset}-staging-{slug}-{i}", cmds)
            m["stored"] = f.stat().st_size
            self.progress("staging", tool, i, runs, m)
            out.append(m)
            shutil.rmtree(d)
        self.record("staging", tool, size, out, dataset, reference="tar | zstd",
                    extra={"stored_bytes": out[-1]["stored"]})

    def stage_restic(self, data, size, dataset, runs):
        out = []
        for i in range(1, runs + 1):
            d = fresh(RUNS / f"stage-restic-{i}")
            env = dict(os.environ, RESTIC_REPOSITORY=str(d / "repo"), RESTIC_PASSWORD=RESTIC_PASSWORD,
                       RESTIC_CACHE_DIR=str(d / "cache"))
            run(["restic", "init", "--repository-version", "2"], env=env, what="restic init")
            m = measure(f"{dataset}-staging-restic-{i}", [["restic", "backup", data]], env=env)
            m["stored"] = tree_bytes(d / "repo")
            self.progress("staging", "restic", i, runs, m)
            out.append(m)
            shutil.rmtree(d)
        self.record("staging", "restic", size, out, dataset, reference="tar | zstd",
                    extra={"stored_bytes": out[-1]["stored"]})

    # -- uploads

    def upload_offsite(self, pristine, data, dataset, dest, runs):
        """offsite upload of a hard-linked copy of the pristine staging folder, to one destination."""
        out = []
        for i in range(1, runs + 1):
            name = f"offsite-{dataset}-{i}"
            d = fresh(RUNS / f"upload-{dest}-{name}")
            link_copy(pristine / "staging", d / "staging")
            prefix = f"bench/{name}"
            cfg = self.config(d / "offsite.toml", d / "staging", data, [dest], prefix=prefix)
            if dest == "s3":
                self.s3_purge(prefix)
            elif dest == "s3s":
                self.s3s_drop(prefix)
            m = measure(f"{dataset}-upload-{dest}-offsite-{i}", [[self.offsite, "--config", cfg, "--json", "upload"]],
                        env=self.s3s_offsite_env if dest == "s3s" else self.offsite_env)
            doc = json.loads(m["stdout"])
            runs_ = doc.get("runs") or []
            dests = [x for r in runs_ for x in r.get("destinations", [])]
            if doc.get("status") != "ok" or len(runs_) != 1 or any(x.get("status") != "ok" for x in dests):
                raise ToolFailed(f"offsite upload ({dest}): not ok: {m['stdout'][-3000:]}\n{tail(LOGS / f'{dataset}-upload-{dest}-offsite-{i}.err')}")
            sent = sum(x.get("bytes_sent", 0) for x in dests)
            resumed = sum(x.get("bytes_resumed", 0) for x in dests)
            if resumed:
                self.notes.append(f"offsite upload {dest} run {i}: bytes_resumed {resumed} (expected 0)")
            m["sent"] = sent
            self.check_remote(dest, prefix, self.uploaded_bytes, f"offsite {dest} run {i}")
            self.progress(f"upload {dest}", "offsite", i, runs, m)
            out.append(m)
            shutil.rmtree(d)
            self.drop_remote(dest, prefix)
        return out

    def check_remote(self, dest, prefix, expect, what):
        """The bytes that arrived (read from the server's folder, or listed on S3) are the staged ones."""
        if dest == "sftp":
            got = tree_bytes(Path(self.sftp["SFTP_ROOT"]) / prefix)
        elif dest == "s3s":
            got = self.s3s_bytes(prefix)
        else:
            got = self.s3_bytes(prefix)
        if got != expect:
            raise ToolFailed(f"{what}: {got} bytes arrived under {prefix}, {expect} staged")

    def drop_remote(self, dest, prefix):
        if dest == "sftp":
            shutil.rmtree(Path(self.sftp["SFTP_ROOT"]) / prefix, ignore_errors=True)
        elif dest == "s3s":
            self.s3s_drop(prefix)
        else:
            self.s3_purge(prefix)

    def upload_peers_sftp(self, backup_dir, dataset, runs):
        s = self.sftp
        files = sorted(p for p in backup_dir.iterdir() if p.is_file())
        rows = {}
        for tool in ("rclone", "OpenSSH sftp"):
            out = []
            short = "rclone" if tool == "rclone" else "sftp"
            for i in range(1, runs + 1):
                prefix = f"bench/{short}-{dataset}-{i}"
                remote = f"{s['SFTP_ROOT']}/{prefix}"
                self.drop_remote("sftp", prefix)
                if tool == "rclone":
                    cmd = ["rclone", "copy", backup_dir, f":sftp:{remote}", "--exclude", "/.journal/**", *self.rclone_sftp()]
                    m = measure(f"{dataset}-upload-sftp-rclone-{i}", [cmd], env=self.rclone_env)
                else:
                    batch = RUNS / f"sftp-batch-{i}"
                    batch.write_text(f'mkdir "{remote}"\n' + "".join(f'put "{f}" "{remote}/{f.name}"\n' for f in files))
                    cmd = ["sftp", "-b", batch, "-i", s["SFTP_KEY_FILE"], "-o", f"UserKnownHostsFile={s['SFTP_KNOWN_HOSTS']}",
                           "-o", "BatchMode=yes", "-P", s["SFTP_PORT"], f"{s['SFTP_USER']}@{s['SFTP_HOST']}"]
                    m = measure(f"{dataset}-upload-sftp-openssh-{i}", [cmd])
                self.check_remote("sftp", prefix, self.uploaded_bytes, f"{tool} sftp run {i}")
                self.progress("upload sftp", tool, i, runs, m)
                out.append(m)
                self.drop_remote("sftp", prefix)
            rows[tool] = out
        return rows

    def upload_peers_s3(self, backup_dir, dataset, runs):
        out = []
        for i in range(1, runs + 1):
            prefix = f"bench/rclone-{dataset}-{i}"
            self.s3_purge(prefix)
            cmd = ["rclone", "copy", backup_dir, self.s3_remote(prefix), "--exclude", "/.journal/**", *self.rclone_s3(),
                   "--s3-chunk-size", "16M", "--s3-upload-concurrency", "4"]
            m = measure(f"{dataset}-upload-s3-rclone-{i}", [cmd], env=self.rclone_env)
            self.check_remote("s3", prefix, self.uploaded_bytes, f"rclone s3 run {i}")
            self.progress("upload s3", "rclone", i, runs, m)
            out.append(m)
            self.s3_purge(prefix)
        return out

    # -- S3 on s3s-fs (tests/servers/s3s.sh): the second S3 server

    def s3s_setup(self):
        """Reads s3s.env when s3s-fs runs (self.s3s is None otherwise: its
        scenario is skipped with a note), and offsite's environment for it."""
        path = SERVERS / "s3s.env"
        self.s3s = read_env(path) if path.exists() else None
        self.s3s_offsite_env = dict(self.offsite_env)
        if self.s3s:
            self.s3s_offsite_env.update(AWS_ACCESS_KEY_ID=self.s3s["S3S_ACCESS_KEY_ID"],
                                        AWS_SECRET_ACCESS_KEY=self.s3s["S3S_SECRET_ACCESS_KEY"])

    def s3s_destination(self, prefix):
        """The config lines of destination `s3s` (path-style: s3s-fs runs without --domain)."""
        e = self.s3s
        lines = [
            "[destination.s3s]",
            'kind = "s3"',
            f"bucket = {toml_str(e['S3S_BUCKET'])}",
            f"endpoint = {toml_str(e['S3S_ENDPOINT'])}",
            f"region = {toml_str(e['S3S_REGION'])}",
        ]
        lines += [f"prefix = {toml_str(prefix)}"] if prefix else []
        return lines + [""]

    def rclone_s3s(self):
        e = self.s3s
        return ["--s3-provider", "Other", "--s3-endpoint", e["S3S_ENDPOINT"], "--s3-region", e["S3S_REGION"],
                "--s3-access-key-id", e["S3S_ACCESS_KEY_ID"], "--s3-secret-access-key", e["S3S_SECRET_ACCESS_KEY"]]

    def s3s_dir(self, prefix):
        """Where s3s-fs keeps the objects under `prefix`: a key is a path under the bucket's folder."""
        return Path(self.s3s["S3S_DATA"]) / self.s3s["S3S_BUCKET"] / prefix

    def s3s_bytes(self, prefix):
        # Read on disk: s3s-fs 0.14.1 lists nothing for rclone's recursive
        # listing (`delimiter=`, empty), and answers 500 to a HEAD of a key
        # that is a folder there, which rclone retries for ~90 s.
        return tree_bytes(self.s3s_dir(prefix))

    def s3s_drop(self, prefix):
        """Removes the objects under `prefix`, and the JSON files s3s-fs keeps
        beside them in its root (it leaves those on a DeleteObject too)."""
        shutil.rmtree(self.s3s_dir(prefix), ignore_errors=True)
        root = Path(self.s3s["S3S_DATA"])
        start = f".bucket-{base64.urlsafe_b64encode(self.s3s['S3S_BUCKET'].encode()).decode().rstrip('=')}.object-"
        for f in root.glob(start + "*.json"):
            b64 = f.name[len(start):].split(".", 1)[0]
            try:
                key = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode()
            except ValueError:
                continue
            if key == prefix or key.startswith(prefix.rstrip("/") + "/"):
                f.unlink(missing_ok=True)

    def bench_upload_s3s(self, pristine, backup_dir, data, dataset, runs):
        """The S3 upload again on s3s-fs: rclone copy (the options it has on
        moto), then offsite upload; a task of its own (S3S_TASK)."""
        if not self.s3s:
            self.notes.append(f"{S3S_TASK} not measured: {SERVERS / 's3s.env'} is missing (tests/servers/s3s.sh start)")
            return
        log(f"{dataset}: upload of {self.uploaded_bytes / MiB:.0f} MiB to s3s-fs, {runs} run(s) per tool")
        out = []
        for i in range(1, runs + 1):
            prefix = f"bench/rclone-{dataset}-{i}"
            self.s3s_drop(prefix)
            cmd = ["rclone", "copy", backup_dir, f":s3:{self.s3s['S3S_BUCKET']}/{prefix}", "--exclude", "/.journal/**",
                   *self.rclone_s3s(), "--s3-chunk-size", "16M", "--s3-upload-concurrency", "4"]
            m = measure(f"{dataset}-upload-s3s-rclone-{i}", [cmd], env=self.rclone_env)
            self.check_remote("s3s", prefix, self.uploaded_bytes, f"rclone s3s-fs run {i}")
            self.progress(S3S_TASK, "rclone", i, runs, m)
            out.append(m)
            self.s3s_drop(prefix)
        self.record(S3S_TASK, "rclone", self.uploaded_bytes, out, dataset, reference="rclone")
        out = self.upload_offsite(pristine, data, dataset, "s3s", runs)
        self.record(S3S_TASK, "offsite", self.uploaded_bytes, out, dataset, reference="rclone")

    # -- restore

    def restore_dest(self, pristine, name):
        """A path destination holding the pristine staged backup as a
        destination holds it (<dest>/<job>/<id>/...), hard-linked; its config."""
        staged = pristine / "staging" / JOB
        backup = next(p for p in staged.iterdir() if p.is_dir() and (p / "manifest.json").exists())
        d = fresh(RUNS / f"restore-{name}")
        link_copy(backup, d / "dest" / JOB / backup.name)
        (d / "staging").mkdir()
        cfg = d / "offsite.toml"
        cfg.write_text("\n".join([
            "# Written by tests/bench/bench.py: restores from a folder destination.",
            "[staging]", f"dir = {toml_str(d / 'staging')}", "",
            "[[job]]", f'name = "{JOB}"', f"source = {{ kind = \"dir\", path = {toml_str(d)} }}",
            'destinations = ["nas"]', "",
            "[destination.nas]", 'kind = "path"', f"path = {toml_str(d / 'dest')}", "",
        ]))
        return d, cfg, d / "dest" / JOB / backup.name

    def bench_restore(self, pristine, data, dataset, runs):
        """offsite restore of the staged backup from a folder, against
        zstd -dc | tar -x of the same volumes followed by one sync.

        The tools take turns run by run (tar first in odd runs, offsite in
        even ones), and no restored tree is deleted until every run is
        done: ext4 skips inodes freed in the last minute when it allocates
        new ones (recently_deleted), so whoever restored after a deleted
        tree paid for it: tar's own 50,000-file restore had ranged from 2.2
        to 3.7 s from one full run to the next."""
        d, cfg, volumes = self.restore_dest(pristine, dataset)
        vols = sorted(str(p) for p in volumes.glob("vol-*.tar.zst"))
        tree_size = tree_bytes(data)
        out = {"tar": [], "offsite": []}
        for i in range(1, runs + 1):
            for tool in (("tar", "offsite") if i % 2 else ("offsite", "tar")):
                to = d / f"to-{tool}-{i}"
                if tool == "offsite":
                    cmd = [[str(self.offsite), "--config", str(cfg), "restore", "--job", JOB, "--to", str(to)]]
                else:
                    to.mkdir()
                    cmd = [["sh", "-c", 'cat "$@" | zstd -dc | tar -x -C "$0" && sync', str(to), *vols]]
                m = measure(f"{dataset}-restore-{tool}-{i}", cmd, env=self.offsite_env)
                self.progress("restore", tool, i, runs, m)
                out[tool].append(m)
        for tool in ("tar", "offsite"):
            label = "offsite restore" if tool == "offsite" else "zstd -dc | tar -x, then sync"
            self.record("restore", label, tree_size, out[tool], dataset, reference="zstd -dc | tar -x, then sync")
        shutil.rmtree(d, ignore_errors=True)

    def bench_restore_small_files(self, runs):
        """The same for SMALL_FILES files of 200 bytes (a tree tar restores
        fast and a file-at-a-time fsync does not)."""
        src = BENCH / f"small-{SMALL_FILES}"
        if not (src / "done").exists():
            shutil.rmtree(src, ignore_errors=True)
            rng = random.Random(SEED)
            for i in range(SMALL_FILES):
                f = src / f"d{i % 500:03d}" / f"f{i:06d}"
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(rng.randbytes(200))
            (src / "done").write_text("")
        d = fresh(RUNS / "stage-small")
        cfg = folder_config(d, f"{{ kind = \"dir\", path = {toml_str(src)}, exclude = [\"done\"] }}", d)
        run([str(self.offsite), "--config", str(cfg), "backup", "--no-upload"], env=self.offsite_env, what="offsite backup (small files)")
        self.bench_restore(d, src, f"{SMALL_FILES} small files", runs)
        shutil.rmtree(d, ignore_errors=True)

    # -- block-level incrementals

    def incr_pair(self, name, data, prepare, change, runs):
        """One incremental scenario, `runs` times: prepare() (fresh data),
        a full backup with offsite (to a folder) and restic's first backup,
        untimed; then change(), which answers the bytes of the 8 KiB pages
        that changed; then offsite's incremental and restic's second backup,
        timed. Stored bytes: offsite's volumes and manifest, restic's
        repository growth. `data()` is the folder backed up."""
        rows = {"offsite": [], "restic": []}
        stored = {"offsite": [], "restic": []}
        changed = []
        for i in range(1, runs + 1):
            prepare()
            d = fresh(RUNS / f"incr-{i}")
            (d / "nas").mkdir()
            cfg = folder_config(d, f"{{ kind = \"dir\", path = {toml_str(data())} }}", d / "nas")
            renv = dict(os.environ, RESTIC_REPOSITORY=str(d / "repo"), RESTIC_PASSWORD=RESTIC_PASSWORD,
                        RESTIC_CACHE_DIR=str(d / "cache"))
            run(["restic", "init", "--repository-version", "2"], env=renv, what="restic init")
            run([str(self.offsite), "--config", str(cfg), "backup", "--full"], env=self.offsite_env,
                what="offsite full backup")
            run(["restic", "backup", str(data())], env=renv, what="restic first backup")
            repo_before = tree_bytes(d / "repo")
            changed.append(change())
            warm(data())
            m = measure(f"incr-{i}-offsite", [[str(self.offsite), "--config", str(cfg), "--json", "backup",
                                                "--incremental"]], env=self.offsite_env)
            doc = json.loads(m["stdout"])
            if doc.get("kind") != "incr":
                raise ToolFailed(f"offsite incremental ({name}): not an incremental: {m['stdout'][-2000:]}")
            manifest = d / "nas" / JOB / doc["backup"] / "manifest.json"
            stored["offsite"].append(doc["staged"]["stored_bytes"] + manifest.stat().st_size)
            self.progress(f"incremental ({name})", "offsite", i, runs, m)
            rows["offsite"].append(m)
            m = measure(f"incr-{i}-restic", [["restic", "backup", str(data())]], env=renv)
            stored["restic"].append(tree_bytes(d / "repo") - repo_before)
            self.progress(f"incremental ({name})", "restic", i, runs, m)
            rows["restic"].append(m)
            shutil.rmtree(d, ignore_errors=True)
        for tool in ("restic", "offsite"):
            self.record("incremental", tool, statistics.median(changed), rows[tool], name, reference="restic",
                        extra={"stored_bytes": int(statistics.median(stored[tool])),
                               "changed_bytes": int(statistics.median(changed))})

    def bench_incremental_pages(self, runs):
        """INCR_FILES files of INCR_FILE_SIZE random bytes (1 GiB, like a
        table's segments), then INCR_PAGES 8 KiB pages written in place at
        random (the same ones every run)."""
        src = BENCH / "pages"
        per = INCR_FILE_SIZE // (8 * KiB)

        def prepare():
            shutil.rmtree(src, ignore_errors=True)
            src.mkdir(parents=True)
            rng = random.Random(SEED)
            for n in range(INCR_FILES):
                with open(src / f"{16384 + n}", "wb") as f:
                    for _ in range(INCR_FILE_SIZE // (16 * MiB)):
                        f.write(rng.randbytes(16 * MiB))

        def change():
            rng = random.Random(SEED + 1)
            chosen = sorted(set(rng.randrange(INCR_FILES * per) for _ in range(INCR_PAGES)))
            for page in chosen:
                fd = os.open(src / f"{16384 + page // per}", os.O_WRONLY)
                try:
                    os.pwrite(fd, rng.randbytes(8 * KiB), (page % per) * 8 * KiB)
                finally:
                    os.close(fd)
            return len(chosen) * 8 * KiB

        log(f"incremental: {INCR_FILES} files of {INCR_FILE_SIZE // MiB} MiB, {INCR_PAGES} random 8 KiB pages "
            f"written in place, {runs} run(s) per tool")
        self.incr_pair("8 KiB pages over 1 GiB", lambda: src, prepare, change, runs)
        shutil.rmtree(src, ignore_errors=True)

    def bench_incremental_pgbench(self, runs):
        """A PostgreSQL data folder (pgbench -i, scale PGBENCH_SCALE) backed
        up live after a CHECKPOINT; then PGBENCH_SECONDS of pgbench and a
        CHECKPOINT before the incremental. The changed pages are counted
        against a copy of the folder taken before pgbench ran."""
        if not list(Path("/usr/lib/postgresql").glob("*/bin/pgbench")):
            self.notes.append("incremental (pgbench): not run, no PostgreSQL server installed")
            return
        script = ROOT / "tests" / "servers" / "postgres.sh"
        snap = BENCH / "pg-before"
        pg = {}
        wal = []  # the changed bytes in pg_wal (new segments count whole)

        def conn():
            return ["-h", pg["PGHOST"], "-p", pg["PGPORT"], "-U", pg["PGUSER"]]

        def sql(q):
            run([str(Path(pg["PG_BIN"]) / "psql"), *conn(), "-X", "-q", "-d", "postgres", "-c", q], what=q)

        def prepare():
            run(["bash", str(script), "start"], what="postgres.sh start")
            pg.update(read_env(SERVERS / "postgres.env"))
            run([str(Path(pg["PG_BIN"]) / "pgbench"), *conn(), "-i", "-q", "-s", str(PGBENCH_SCALE), "postgres"],
                what="pgbench -i")
            sql("CHECKPOINT")

        def change():
            shutil.rmtree(snap, ignore_errors=True)
            shutil.copytree(pg["PG_DATA"], snap, symlinks=True)
            run([str(Path(pg["PG_BIN"]) / "pgbench"), *conn(), "-c", "2", "-T", str(PGBENCH_SECONDS), "postgres"],
                what="pgbench")
            sql("CHECKPOINT")
            wal.append(changed_pages(snap / "pg_wal", Path(pg["PG_DATA"]) / "pg_wal"))
            return changed_pages(snap, Path(pg["PG_DATA"]))

        log(f"incremental: pgbench scale {PGBENCH_SCALE}, {PGBENCH_SECONDS} s of pgbench, {runs} run(s) per tool")
        try:
            self.incr_pair("pgbench", lambda: Path(pg["PG_DATA"]), prepare, change, runs)
            for r in self.results:
                if r["dataset"] == "pgbench":
                    r["changed_bytes_wal"] = int(statistics.median(wal))
        finally:
            run(["bash", str(script), "stop"], what="postgres.sh stop", check=False)
            shutil.rmtree(snap, ignore_errors=True)

    # -- cluster sets

    def bench_cluster_list(self, runs):
        """`offsite list` of a cluster job of CLUSTER_MEMBERS members with
        CLUSTER_SETS complete sets on moto, through a proxy that counts the
        requests: the sets are judged from their index markers alone."""
        members = [f"m{i:02d}" for i in range(CLUSTER_MEMBERS)]
        prefix = "bench-cluster"
        tree = fresh(BENCH / "cluster-index")
        start = 1767232800  # 2026-01-01T02:00:00Z, a set a day
        for n in range(CLUSTER_SETS):
            set_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start + n * 86400))
            folder = tree / JOB / "index" / set_id
            folder.mkdir(parents=True)
            (folder / "members.json").write_text(json.dumps({"set": set_id, "members": members, "grace_seconds": 21600}))
            for m in members:
                marker = {"member": m, "backup": f"{set_id}-full-{m}", "kind": "full", "at": "2026-01-01T03:00:00Z"}
                (folder / f"{m}.done").write_text(json.dumps(marker))
        objects = CLUSTER_SETS * (1 + len(members))
        log(f"cluster list: {objects} marker objects to moto (rclone), then offsite list, {runs} run(s)")
        self.s3_purge(prefix)
        run(["rclone", "copy", str(tree), self.s3_remote(prefix), "--transfers", "32", *self.rclone_s3()],
            env=self.rclone_env, what="rclone copy (cluster index)")
        shutil.rmtree(tree, ignore_errors=True)
        upstream = self.moto["MOTO_ENDPOINT"].split("://", 1)[-1].split("/", 1)[0]
        proxy = CountingProxy(upstream)
        config = BENCH / "cluster.toml"
        quoted = ", ".join(f'"{m}"' for m in members)
        config.write_text("\n".join([
            "# Written by tests/bench/bench.py: a cluster job whose sets are listed.",
            'host_id = "m00"',
            "[staging]",
            f"dir = {toml_str(BENCH / 'cluster-staging')}",
            "",
            "[[job]]",
            f'name = "{JOB}"',
            f"source = {{ kind = \"dir\", path = {toml_str(BENCH)} }}",
            'destinations = ["s3"]',
            f"cluster = {{ members = [{quoted}] }}",
            "",
            "[destination.s3]",
            'kind = "s3"',
            f"bucket = {toml_str(self.moto['MOTO_BUCKET'])}",
            f'endpoint = "http://127.0.0.1:{proxy.port}"',
            f"prefix = {toml_str(prefix)}",
            "",
        ]))
        out = []
        for i in range(runs):
            proxy.take()
            m = measure(f"cluster-list-{i}", [[str(self.offsite), "--config", str(config), "--json", "list"]],
                        env=self.offsite_env)
            sets = json.loads(m["stdout"])["listings"][0].get("sets", [])
            complete = sum(s["status"] == "complete" and len(s["members_ok"]) == len(members) for s in sets)
            if len(sets) != CLUSTER_SETS or complete != CLUSTER_SETS:
                raise ToolFailed(f"offsite list saw {len(sets)} sets, {complete} complete; expected {CLUSTER_SETS}")
            m["requests"] = proxy.take()
            log(f"cluster list run {i + 1}/{runs}: {m['seconds']:.2f} s, requests {m['requests']}")
            out.append(m)
        self.s3_purge(prefix)
        dataset = f"{len(members)} members x {CLUSTER_SETS} sets"
        requests = out[-1]["requests"]
        self.record("list cluster sets", "offsite", 0, out, dataset,
                    extra={"requests": requests, "objects": objects})
        self.cluster = {"dataset": dataset, "objects": objects, "requests": requests,
                        "median_seconds": statistics.median(m["seconds"] for m in out)}

    # -- one dataset

    def bench_dataset(self, scale, runs, peers):
        data, size, nfiles = ensure_dataset(scale, self.args.quick)
        dataset = dataset_name(scale, self.args.quick)
        self.datasets[dataset] = {"path": str(data), "bytes": size, "files": nfiles,
                                  "params": dataset_params(scale, self.args.quick)}
        warm(data)
        shutil.rmtree(RUNS, ignore_errors=True)
        RUNS.mkdir(parents=True)

        # Staging.
        log(f"{dataset}: staging, {runs} run(s) per tool")
        if peers:
            self.stage_tar_zstd(data, size, dataset, runs)
            self.stage_tar_zstd(data, size, dataset, runs, fsync=True)
        pristine, doc = self.stage_offsite(data, size, dataset, runs, keep_last=True)
        if peers:
            self.stage_restic(data, size, dataset, runs)
        jobdir = pristine / "staging" / JOB
        backup_dir = jobdir / doc["backup"]
        if not backup_dir.is_dir():
            raise ToolFailed(f"offsite staged {doc['backup']} but {backup_dir} is not there")
        if (backup_dir / ".journal").exists() and any((backup_dir / ".journal").iterdir()):
            raise ToolFailed(f"{backup_dir}/.journal is not empty before any upload")
        self.uploaded_bytes = sum(p.stat().st_size for p in backup_dir.iterdir() if p.is_file())
        self.datasets[dataset].update(staged_backup=doc["backup"], staged_bytes=doc["staged"]["bytes"],
                                      stored_bytes=doc["staged"]["stored_bytes"], uploaded_bytes=self.uploaded_bytes,
                                      files_uploaded=sorted(p.name for p in backup_dir.iterdir() if p.is_file()))
        warm(backup_dir)

        # SFTP.
        sftp_bench = self.sftp_dir("")
        sftp_bench.mkdir(parents=True, exist_ok=True)
        u = pwd.getpwnam(self.sftp["SFTP_USER"])
        os.chown(sftp_bench, u.pw_uid, u.pw_gid)
        log(f"{dataset}: upload of {self.uploaded_bytes / MiB:.0f} MiB to sftp, {runs} run(s) per tool")
        peer = self.upload_peers_sftp(backup_dir, dataset, runs) if peers else {}
        for tool, out in peer.items():
            self.record("upload sftp", tool, self.uploaded_bytes, out, dataset, reference="OpenSSH sftp")
        out = self.upload_offsite(pristine, data, dataset, "sftp", runs)
        self.record("upload sftp", "offsite", self.uploaded_bytes, out, dataset, reference="OpenSSH sftp")

        # S3.
        log(f"{dataset}: upload of {self.uploaded_bytes / MiB:.0f} MiB to s3, {runs} run(s) per tool")
        if peers:
            out = self.upload_peers_s3(backup_dir, dataset, runs)
            self.record("upload s3", "rclone", self.uploaded_bytes, out, dataset, reference="rclone")
        out = self.upload_offsite(pristine, data, dataset, "s3", runs)
        self.record("upload s3", "offsite", self.uploaded_bytes, out, dataset, reference="rclone")
        if peers:
            self.bench_upload_s3s(pristine, backup_dir, data, dataset, runs)

        # Restore.
        if peers:
            log(f"{dataset}: restore from a folder, {runs} run(s) per tool")
            self.bench_restore(pristine, data, dataset, runs)

        shutil.rmtree(RUNS, ignore_errors=True)
        return dataset

    # -- all of it

    def main(self):
        a = self.args
        self.datasets = {}
        self.started = time.time()
        shutil.rmtree(LOGS, ignore_errors=True)
        self.machine = machine_facts(self.offsite)
        for k, v in self.machine.items():
            log(f"machine: {k}: {v}")
        try:
            base = self.bench_dataset(a.scale, a.runs, peers=not a.scale_only)
            big = None
            if not a.no_scale:
                log(f"scale check: offsite alone on a dataset {4}x larger, 1 run each")
                big = self.bench_dataset(a.scale * 4, 1, peers=False)
            self.cluster = None
            if not a.scale_only:
                log(f"restore of {SMALL_FILES} small files, {a.runs} run(s) per tool")
                self.bench_restore_small_files(a.runs)
                self.bench_cluster_list(a.runs)
                self.bench_incremental_pages(a.runs)
                self.bench_incremental_pgbench(a.runs)
        finally:
            self.cleanup()
        self.report(base, big)

    def cleanup(self):
        shutil.rmtree(RUNS, ignore_errors=True)
        shutil.rmtree(self.sftp_dir(""), ignore_errors=True)
        self.s3_purge("bench")
        if self.s3s:
            self.s3s_drop("bench")

    # -- report

    def ratios(self):
        for r in self.results:
            ref = self.find(r["task"], r["reference"], r["dataset"]) if r["reference"] else None
            r["ratio"] = r["median_seconds"] / ref["median_seconds"] if ref else None

    def targets(self, base, big):
        t = []

        def add(name, value, limit, met, detail):
            t.append({"target": name, "value": value, "limit": limit, "met": met, "detail": detail})

        def time_target(task, ref, limit, label):
            o, r = self.find(task, "offsite", base), self.find(task, ref, base)
            if o and r:
                ratio = o["median_seconds"] / r["median_seconds"]
                add(label, round(ratio, 3), limit, ratio <= limit,
                    f"offsite {o['median_seconds']:.2f} s / {ref} {r['median_seconds']:.2f} s = {ratio:.2f}x (limit {limit}x)")
            else:
                add(label, None, limit, None, f"not measured ({ref} skipped)")

        time_target("staging", "tar | zstd", 1.10, "staging time <= 1.10 x tar | zstd -T0 -3")
        time_target("upload sftp", "OpenSSH sftp", 1.0, "SFTP upload time <= OpenSSH sftp's")
        time_target("upload s3", "rclone", 1.0, "S3 upload time <= rclone's")
        if self.s3s:
            time_target(S3S_TASK, "rclone", 1.0, "S3 upload time <= rclone's on s3s-fs")
        else:
            add("S3 upload time <= rclone's on s3s-fs", None, 1.0, None, "not measured (s3s-fs not started)")
        for ds in (base, f"{SMALL_FILES} small files"):
            o, r = self.find("restore", "offsite restore", ds), self.find("restore", "zstd -dc | tar -x, then sync", ds)
            if o and r:
                ratio = o["median_seconds"] / r["median_seconds"]
                add(f"restore ({ds}) <= 1.5 x zstd -dc | tar -x, then sync", round(ratio, 3), 1.5, ratio <= 1.5,
                    f"offsite {o['median_seconds']:.2f} s / tar {r['median_seconds']:.2f} s = {ratio:.2f}x (limit 1.5x)")
        for ds in ("8 KiB pages over 1 GiB", "pgbench"):
            o, r = self.find("incremental", "offsite", ds), self.find("incremental", "restic", ds)
            if not (o and r):
                continue
            ch = o["changed_bytes"]
            add(f"incremental ({ds}): stored <= 2 x the changed 8 KiB pages", o["stored_bytes"], 2 * ch,
                o["stored_bytes"] <= 2 * ch,
                f"offsite stored {o['stored_bytes'] / MiB:.1f} MiB (volumes and manifest), restic "
                f"{r['stored_bytes'] / MiB:.1f} MiB, for {ch / MiB:.1f} MiB of changed pages "
                f"({o['stored_bytes'] / max(1, ch):.2f}x"
                + (f"; {o['changed_bytes_wal'] / MiB:.1f} MiB of them in pg_wal" if "changed_bytes_wal" in o else "")
                + ")")
            ratio = o["median_seconds"] / r["median_seconds"]
            add(f"incremental ({ds}): time <= restic's second backup", round(ratio, 3), 1.0, ratio <= 1.0,
                f"offsite {o['median_seconds']:.2f} s / restic {r['median_seconds']:.2f} s = {ratio:.2f}x")
        for task in ("upload sftp", "upload s3", S3S_TASK):
            rows = [r for r in self.results if r["task"] == task and r["tool"] == "offsite"]
            if not rows:
                continue
            peak = max(r["peak_rss_kib"] for r in rows) * KiB
            add(f"offsite {task} peak RSS <= part_size x concurrency + 64 MiB",
                round(peak / MiB, 1), RSS_LIMIT // MiB, peak <= RSS_LIMIT,
                f"{peak / MiB:.1f} MiB (largest of {', '.join(r['dataset'] for r in rows)}) vs "
                f"{PART_SIZE // MiB} MiB x {CONCURRENCY} + {RSS_HEADROOM // MiB} MiB = {RSS_LIMIT // MiB} MiB")
        o = self.find("staging", "offsite", base)
        add("offsite staging peak RSS (reported only)", round(o["peak_rss_kib"] / KiB, 1), None, None,
            f"{o['peak_rss_kib'] / KiB:.1f} MiB")
        if big:
            for task in ("staging", "upload sftp", "upload s3"):
                a, b = self.find(task, "offsite", base), self.find(task, "offsite", big)
                change = b["peak_rss_kib"] / a["peak_rss_kib"] - 1
                spread = sorted(r["peak_rss_kib"] / KiB for r in a["runs"])
                add(f"offsite {task} peak RSS at {big.split('-')[-1]} within 10% of {base.split('-')[-1]}",
                    round(change * 100, 1), 10, abs(change) <= 0.10,
                    f"{a['peak_rss_kib'] / KiB:.1f} MiB -> {b['peak_rss_kib'] / KiB:.1f} MiB ({change * 100:+.1f}%; "
                    f"{base.split('-')[-1]}'s runs: {', '.join(f'{x:.1f}' for x in spread)} MiB)")
        else:
            add("offsite peak RSS at 4x within 10% of 1x", None, 10, None, "not measured (--no-scale)")
        c = getattr(self, "cluster", None)
        if c:
            total = sum(c["requests"].values())
            add(f"list of a cluster's sets reads its index only ({c['dataset']})", total, None, None,
                f"{total} requests ({', '.join(f'{k} {v}' for k, v in sorted(c['requests'].items()))}) for "
                f"{c['objects']} marker objects, {c['median_seconds']:.2f} s median; no volume is listed")
        return t

    def report(self, base, big):
        self.ratios()
        targets = self.targets(base, big)
        d = self.datasets[base]
        print(f"offsite benchmark: dataset {base}: {d['bytes'] / MiB:.0f} MiB in {d['files']} files "
              f"(EventStoreDB-like, seed {SEED}); offsite staged {d['stored_bytes'] / MiB:.0f} MiB "
              f"(zstd:3, {d['staged_bytes'] / max(1, d['stored_bytes']):.2f}:1) in "
              f"{sum(f.startswith('vol-') for f in d['files_uploaded'])} volume(s) + manifest; "
              f"runs: {self.args.runs}; page cache warm (dataset read once before timing)")
        print(f"machine: {self.machine['nproc']} cores, {self.machine['cpu']}, kernel {self.machine['kernel']}, "
              f"{self.machine['memory']}")
        print()
        head = ("task", "tool", "dataset", "median s", "MB/s", "peak RSS MiB", "ratio")
        rows = [head]
        for r in self.results:
            rows.append((r["task"], r["tool"], r["dataset"], f"{r['median_seconds']:.2f}", f"{r['mb_per_s']:.1f}",
                         f"{r['peak_rss_kib'] / KiB:.1f}",
                         f"{r['ratio']:.2f}x {r['reference']}" if r["ratio"] is not None else "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        for n, row in enumerate(rows):
            print("  ".join(c.ljust(w) if i < 3 or i == 6 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
            if n == 0:
                print("  ".join("-" * w for w in widths))
        print()
        print("MB/s: staging of the dataset's bytes, uploads of the staged bytes (10^6 bytes/s); ratio: median time "
              "over the reference tool's. A pipeline's peak RSS is the sum of its processes'.")
        print("offsite fsyncs each staged volume, and on SFTP each part on the server (fsync@openssh.com); "
              "tar | zstd, OpenSSH sftp and rclone do not (restic fsyncs its repository files).")
        print()
        print("targets:")
        for t in targets:
            state = "met" if t["met"] else ("n/a" if t["met"] is None else "MISSED")
            print(f"  [{state:>6}] {t['target']}: {t['detail']}")
        for n in self.notes:
            print(f"note: {n}")
        doc = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "args": vars(self.args),
            "machine": self.machine,
            "datasets": self.datasets,
            "page_cache": "warm: each dataset, and the staged backup, read once (cat to /dev/null) before timing",
            "offsite_upload_settings": {"part_size": PART_SIZE, "concurrency": CONCURRENCY},
            "results": self.results,
            "targets": targets,
            "notes": self.notes,
        }
        # A trial run (--quick, --scale-only) never replaces a full run's results.
        suffix = "".join(f"-{k}" for k, on in (("quick", self.args.quick), ("scale-only", self.args.scale_only)) if on)
        path = BENCH / f"results{suffix}.json"
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"\nresults: {path}")


def machine_facts(offsite):
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        memory = f"{int(mem.split()[1]) / MiB:.1f} GiB RAM"
    except (OSError, StopIteration):
        memory = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            "offsite": version([str(offsite), "--version"]),
            "rclone": version(["rclone", "version"]),
            "s3s-fs": version([str(S3S_BIN), "--version"]),
            "restic": version(["restic", "version"]),
            "zstd": version(["zstd", "--version"]),
            "tar": version(["tar", "--version"]),
            "ssh": version(["ssh", "-V"]),
        },
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="runs per measurement (default 3, or $BENCH_RUNS; --quick: 1)")
    ap.add_argument("--scale", type=int, default=1, help="the dataset's chunk bytes times N (data-Nx; default 1)")
    ap.add_argument("--quick", action="store_true", help="a small dataset (about 64 MiB) and 1 run: to try the harness")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--no-scale", action="store_true", help="skip the scale check (offsite alone at 4x the dataset)")
    g.add_argument("--scale-only", action="store_true", help="offsite alone: at the dataset's size, then at 4x (no peers)")
    ap.add_argument("--offsite", default=str(ROOT / "target" / "release" / "offsite"), help="the binary (default target/release/offsite)")
    a = ap.parse_args()
    if a.runs is None:
        a.runs = int(os.environ.get("BENCH_RUNS") or (1 if a.quick else 3))
    if a.runs < 1 or a.scale < 1:
        ap.error("--runs and --scale must be at least 1")
    if not os.access(a.offsite, os.X_OK):
        print(f"bench: {a.offsite} is not there: build it with `cargo build --release --bin offsite`", file=sys.stderr)
        return 2
    missing = [t for t in ("rclone", "restic", "zstd", "tar", "sftp", "ssh", "cat") if not shutil.which(t)]
    if missing:
        print(f"bench: missing {', '.join(missing)}: run `make bench` (it installs them)", file=sys.stderr)
        return 2
    BENCH.mkdir(parents=True, exist_ok=True)
    try:
        b = Bench(a)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        b.main()
    except ToolFailed as e:
        print(f"bench: a tool failed:\n{e}", file=sys.stderr)
        return 1
    log(f"done in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
