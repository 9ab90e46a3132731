//! Network faults between offsite and a real server: a TCP proxy in the test
//! cuts connections after some bytes, or stalls them. Uploads retry and
//! complete; a stalled connection times out instead of hanging; a
//! destination that stays unreachable fails alone (exit 3).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// What the proxy does to the connections it accepts.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Forward everything.
    Pass,
    /// Cut each of the next `times` connections once it has sent `after`
    /// bytes towards the server.
    Cut { after: u64, times: usize },
    /// Stop forwarding (in both directions) once `after` bytes went towards
    /// the server, keeping the connection open.
    Stall { after: u64 },
    /// Flip one bit of the byte at `after` towards the server, on each of
    /// the next `times` connections (damage in transit that TCP missed).
    Corrupt { after: u64, times: usize },
    /// Once a request that `is_it` recognises (in the last bytes sent
    /// towards the server) has gone through, drop the server's answer and
    /// cut the connection: the server did the work, the client never hears
    /// of it. Only the first such request.
    LoseAnswer { is_it: fn(&[u8]) -> bool },
    /// Replace every `from` (matched without regard to case) in what goes
    /// towards the server by `to`, of the same length: a proxy that strips
    /// a header by renaming it.
    Rewrite {
        from: &'static [u8],
        to: &'static [u8],
    },
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`, for the test's lifetime.
struct Proxy {
    port: u16,
    fault: Arc<Mutex<Fault>>,
    /// Once set, every connection, open or new, stops forwarding (a server
    /// that hangs in the middle of a run).
    freeze: Arc<AtomicBool>,
    /// Connections cut (or bytes corrupted) so far.
    cuts: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: String, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let fault = Arc::new(Mutex::new(fault));
        let cuts = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let freeze = Arc::new(AtomicBool::new(false));
        let (f, c, d, z) = (fault.clone(), cuts.clone(), done.clone(), freeze.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if d.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                // This connection's fault, decided when it opens.
                let mine = {
                    let mut g = f.lock().expect("fault");
                    let mine = *g;
                    match mine {
                        Fault::Cut { after, times } => {
                            *g = if times > 1 {
                                Fault::Cut {
                                    after,
                                    times: times - 1,
                                }
                            } else {
                                Fault::Pass
                            };
                        }
                        Fault::Corrupt { after, times } => {
                            *g = if times > 1 {
                                Fault::Corrupt {
                                    after,
                                    times: times - 1,
                                }
                            } else {
                                Fault::Pass
                            };
                        }
                        _ => {}
                    }
                    mine
                };
                pump_pair(client, server, mine, c.clone(), d.clone(), z.clone());
            }
        });
        Proxy {
            port,
            fault,
            freeze,
            cuts,
            done,
        }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().expect("fault") = fault;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `done`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump_pair(
    client: TcpStream,
    server: TcpStream,
    fault: Fault,
    cuts: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    freeze: Arc<AtomicBool>,
) {
    let frozen = freeze.clone();
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up_bytes = Arc::new(AtomicUsize::new(0));
    let stalled = Arc::new(AtomicBool::new(false));
    // LoseAnswer: the request went up; the next answer is dropped.
    let armed = Arc::new(AtomicBool::new(false));
    let (ub, st, arm) = (up_bytes.clone(), stalled.clone(), armed.clone());
    let cuts_down = cuts.clone();
    // Towards the server: where the faults are applied.
    std::thread::spawn(move || {
        let (mut from, mut to) = (client, server);
        let mut buf = [0u8; 16 * 1024];
        // The last bytes sent up, for LoseAnswer to recognise a request in.
        let mut recent: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let sent = ub.fetch_add(n, Ordering::SeqCst) + n;
            if let Fault::LoseAnswer { is_it } = fault {
                recent.extend_from_slice(&buf[..n]);
                if recent.len() > 8192 {
                    recent.drain(..recent.len() - 8192);
                }
                if is_it(&recent) && cuts.load(Ordering::SeqCst) == 0 {
                    arm.store(true, Ordering::SeqCst);
                    recent.clear();
                }
            }
            if let Fault::Rewrite {
                from: pat,
                to: with,
            } = fault
            {
                let end = n.saturating_sub(pat.len() - 1);
                for i in 0..end {
                    if buf[i..i + pat.len()].eq_ignore_ascii_case(pat) {
                        buf[i..i + pat.len()].copy_from_slice(with);
                        cuts.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            if let Fault::Corrupt { after, .. } = fault {
                let start = sent - n;
                if (start as u64..sent as u64).contains(&after) {
                    buf[after as usize - start] ^= 0x01;
                    cuts.fetch_add(1, Ordering::SeqCst);
                }
            }
            match fault {
                Fault::Cut { after, .. } if sent as u64 >= after => {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    break;
                }
                Fault::Stall { after } if sent as u64 >= after => {
                    st.store(true, Ordering::SeqCst);
                    hold_open(&mut from, &to, &done);
                    break;
                }
                _ if freeze.load(Ordering::SeqCst) => {
                    st.store(true, Ordering::SeqCst);
                    hold_open(&mut from, &to, &done);
                    break;
                }
                _ => {}
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    // Towards the client.
    std::thread::spawn(move || {
        let (mut from, mut to) = (s2, c2);
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if stalled.load(Ordering::SeqCst) || frozen.load(Ordering::SeqCst) {
                continue;
            }
            if armed.load(Ordering::SeqCst) {
                // The server answered the request: the client never hears it.
                cuts_down.fetch_add(1, Ordering::SeqCst);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                break;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Holds a stalled connection open, forwarding nothing, until the client
/// gives up (or the test ends); then closes the server's side.
fn hold_open(from: &mut TcpStream, to: &TcpStream, done: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    while !done.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// Whether `recent` (bytes sent towards an HTTP server) holds a request
/// line with `method` whose target contains `what`.
fn request_line(recent: &[u8], method: &str, what: &str) -> bool {
    let text = String::from_utf8_lossy(recent);
    text.lines()
        .any(|l| l.starts_with(method) && l.contains(what) && l.ends_with("HTTP/1.1"))
}

/// Azure's Put Block List (the commit of a volume or of the manifest).
fn azure_commit(recent: &[u8]) -> bool {
    request_line(recent, "PUT ", "comp=blocklist")
}

/// S3's CompleteMultipartUpload.
fn s3_complete(recent: &[u8]) -> bool {
    request_line(recent, "POST ", "uploadId=")
}

/// S3's PutObject of a manifest.
fn s3_manifest_put(recent: &[u8]) -> bool {
    request_line(recent, "PUT ", "/manifest.json")
}

/// The answer to a create-only write is lost after the server stored it: the
/// retry finds the key taken, sees (by reading it back) that the object
/// there is the one it sent, and the backup completes; nothing is
/// overwritten and the restore is byte-identical.
#[test]
fn an_azure_commit_whose_answer_is_lost_completes_without_overwriting() {
    azure_backup_survives(
        "an_azure_commit_whose_answer_is_lost_completes_without_overwriting",
        Fault::LoseAnswer {
            is_it: azure_commit,
        },
        1,
        "one commit's answer was lost",
    );
}

/// As above on S3 (moto), for a volume's CompleteMultipartUpload and for
/// the manifest's PutObject, with credentials that may read the bucket and
/// with put-only ones (which trust the journal: the lost attempt was theirs).
#[test]
fn s3_writes_whose_answer_is_lost_complete_without_overwriting() {
    let m = crate::s3::moto();
    let endpoint = m["MOTO_ENDPOINT"].clone();
    let upstream = endpoint.trim_start_matches("http://").to_string();
    type Case = (&'static str, fn(&[u8]) -> bool, bool);
    let cases: [Case; 3] = [
        ("complete", s3_complete, false),
        ("manifest", s3_manifest_put, false),
        ("manifest_put_only", s3_manifest_put, true),
    ];
    for (what, is_it, put_only) in cases {
        let sb = Sandbox::new(&format!("s3_lost_answer_{what}"));
        source(&sb);
        let proxy = Proxy::start(upstream.clone(), Fault::LoseAnswer { is_it });
        let extra = format!("concurrency = 1\nput_only = {put_only}");
        let table = crate::s3::s3_table(&sb, &extra).replace(
            &format!("endpoint = \"{endpoint}\""),
            &format!("endpoint = \"http://127.0.0.1:{}\"", proxy.port),
        );
        sb.config_dir_job("volume_size = \"8MiB\"", &["s3"], &table);
        let (id, secret) = if put_only {
            (
                "MOTO_UPLOADER_ACCESS_KEY_ID",
                "MOTO_UPLOADER_SECRET_ACCESS_KEY",
            )
        } else {
            ("MOTO_ADMIN_ACCESS_KEY_ID", "MOTO_ADMIN_SECRET_ACCESS_KEY")
        };
        let r = Run::from(
            sb.command(&["--json", "backup"])
                .env("AWS_ACCESS_KEY_ID", &m[id])
                .env("AWS_SECRET_ACCESS_KEY", &m[secret])
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .output()
                .expect("run"),
        );
        assert_eq!(r.code, 0, "{what}: {r:?}");
        assert_eq!(
            proxy.cuts.load(Ordering::SeqCst),
            1,
            "{what}: one answer was lost"
        );
        proxy.set(Fault::Pass);
        let admin = |args: &[&str]| {
            let text = std::fs::read_to_string(sb.config_path()).expect("config");
            sb.write_config(&text.replace("put_only = true", "put_only = false"));
            Run::from(
                sb.command(args)
                    .env("AWS_ACCESS_KEY_ID", &m["MOTO_ADMIN_ACCESS_KEY_ID"])
                    .env("AWS_SECRET_ACCESS_KEY", &m["MOTO_ADMIN_SECRET_ACCESS_KEY"])
                    .env("AWS_EC2_METADATA_DISABLED", "true")
                    .output()
                    .expect("run"),
            )
        };
        crate::remote::restores_the_source(&sb, admin);
    }
}

/// Azure's table with the endpoint through the proxy on `port`.
fn blob_via(sb: &Sandbox, port: u16, extra: &str) -> String {
    let e = crate::remote::server_env("azurite.env", "azurite.sh");
    let endpoint = &e["AZURE_ENDPOINT"];
    crate::azure::blob_table(sb, extra).replace(
        &format!("endpoint = \"{endpoint}\""),
        &format!(
            "endpoint = \"http://127.0.0.1:{port}/{}\"",
            e["AZURE_ACCOUNT"]
        ),
    )
}

/// The stall tests' settings: a short timeout, and few retries to keep the
/// test short (the default waits half a minute before giving up).
const STALLED: &str = "timeout = \"2s\"\nretries = 2";

fn upstream_of_azurite() -> String {
    let e = crate::remote::server_env("azurite.env", "azurite.sh");
    e["AZURE_ENDPOINT"]
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port")
        .to_string()
}

const NAS: &str = "[destination.nas]\nkind = \"path\"\npath = \"dest\"\n";

fn source(sb: &Sandbox) {
    write(&sb.path("src/chunk-000000.000000"), &noise(3 << 20, 81));
    write(&sb.path("src/writer.chk"), b"0000000000000081");
}

/// Backs up to Azurite through a proxy doing `fault`, one block at a time:
/// the backup completes with the fault seen `times` times, and restores
/// byte-identical.
fn azure_backup_survives(test: &str, fault: Fault, times: usize, what: &str) {
    let sb = Sandbox::new(test);
    source(&sb);
    let proxy = Proxy::start(upstream_of_azurite(), fault);
    let table = blob_via(&sb, proxy.port, "part_size = \"1MiB\"\nconcurrency = 1");
    sb.config_dir_job("volume_size = \"1MiB\"", &["blob"], &table);
    let key = crate::azure::key();
    let run =
        |args: &[&str]| Run::from(sb.command(args).env("AZ_KEY", &key).output().expect("run"));
    let r = run(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), times, "{what}");
    proxy.set(Fault::Pass);
    crate::remote::restores_the_source(&sb, run);
}

/// Each of the first three connections dies after 600 KB towards the server.
#[test]
fn connections_cut_mid_upload_are_retried_and_the_backup_completes() {
    azure_backup_survives(
        "connections_cut_mid_upload_are_retried_and_the_backup_completes",
        Fault::Cut {
            after: 600_000,
            times: 3,
        },
        3,
        "three connections were cut",
    );
}

/// A block damaged in transit: Azure (and Azurite) check the Content-MD5
/// offsite sends with every block and refuse it; the block is sent again
/// and the backup restores byte-identical. Without the MD5 the damaged
/// block would be stored, and the restore's hash check would fail.
#[test]
fn a_block_damaged_in_transit_is_refused_by_its_md5_and_sent_again() {
    azure_backup_survives(
        "a_block_damaged_in_transit_is_refused_by_its_md5_and_sent_again",
        Fault::Corrupt {
            after: 700_000,
            times: 1,
        },
        1,
        "a block was damaged",
    );
}

/// Backs up to a folder and to `dest` (its `table` points at a stalling
/// proxy, with `timeout = "2s"`): the stalled destination fails alone, its
/// error says it timed out, and the run ends in bounded time.
fn a_stalled_destination_fails_alone(sb: &Sandbox, dest: &str, table: &str, env: &[(&str, &str)]) {
    sb.config_dir_job("", &["nas", dest], &format!("{NAS}\n{table}"));
    let started = Instant::now();
    let r = Run::from(
        sb.command(&["--json", "backup"])
            .envs(env.iter().copied())
            .output()
            .expect("run"),
    );
    let took = started.elapsed();
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    let dests = j["destinations"].as_array().expect("destinations");
    let nas = dests.iter().find(|d| d["name"] == "nas").expect("nas");
    let stalled = dests.iter().find(|d| d["name"] == dest).expect("dest");
    assert_eq!(nas["status"], "ok", "{r:?}");
    assert_eq!(stalled["status"], "failed", "{r:?}");
    let err = stalled["error"].as_str().unwrap_or("");
    assert!(
        err.contains("timed out"),
        "the error says it timed out: {err}"
    );
    assert!(
        took < Duration::from_secs(90),
        "a stalled server must not hang the backup: {took:?}"
    );
}

#[test]
fn a_stalled_connection_times_out_and_its_destination_fails_alone() {
    let sb = Sandbox::new("a_stalled_connection_times_out_and_its_destination_fails_alone");
    source(&sb);
    let proxy = Proxy::start(upstream_of_azurite(), Fault::Stall { after: 300_000 });
    let table = blob_via(&sb, proxy.port, STALLED);
    let key = crate::azure::key();
    a_stalled_destination_fails_alone(&sb, "blob", &table, &[("AZ_KEY", &key)]);
}

#[test]
fn a_stalled_s3_server_times_out_and_its_destination_fails_alone() {
    let sb = Sandbox::new("a_stalled_s3_server_times_out_and_its_destination_fails_alone");
    source(&sb);
    let m = crate::s3::moto();
    let endpoint = m["MOTO_ENDPOINT"].clone();
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let proxy = Proxy::start(upstream, Fault::Stall { after: 300_000 });
    let table = crate::s3::s3_table(&sb, STALLED).replace(
        &format!("endpoint = \"{endpoint}\""),
        &format!("endpoint = \"http://127.0.0.1:{}\"", proxy.port),
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", m["MOTO_ADMIN_ACCESS_KEY_ID"].as_str()),
        (
            "AWS_SECRET_ACCESS_KEY",
            m["MOTO_ADMIN_SECRET_ACCESS_KEY"].as_str(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    a_stalled_destination_fails_alone(&sb, "s3", &table, &env);
}

/// SFTP through the proxy: connections cut in the middle of a part. The
/// upload reconnects, checks the partial file's size against the journal
/// and goes on; the restore is byte-identical.
#[test]
fn sftp_connections_cut_mid_upload_reconnect_and_complete() {
    let sb = Sandbox::new("sftp_connections_cut_mid_upload_reconnect_and_complete");
    source(&sb);
    let e = crate::remote::server_env("sshd.env", "sshd.sh");
    let upstream = format!("{}:{}", e["SFTP_HOST"], e["SFTP_PORT"]);
    let proxy = Proxy::start(
        upstream,
        Fault::Cut {
            after: 1_500_000,
            times: 2,
        },
    );
    let table = crate::sftp::via_port(
        &sb,
        &crate::sftp::sftp_table(&sb, &crate::sftp::key_auth(), "SFTP_KNOWN_HOSTS"),
        proxy.port,
    );
    sb.config_dir_job(
        "volume_size = \"2MiB\"",
        &["sftp"],
        &format!("{table}part_size = \"1MiB\"\n"),
    );
    let r = sb.offsite(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        proxy.cuts.load(Ordering::SeqCst),
        2,
        "two connections were cut"
    );
    proxy.set(Fault::Pass);
    crate::remote::restores_the_source(&sb, |args| sb.offsite(args));
}

/// A destination that fails partway reports what reached it: two 1 MiB
/// blocks were stored before the server stalled, and `bytes_sent` says so.
#[test]
fn a_destination_failing_midway_reports_the_bytes_that_reached_it() {
    let sb = Sandbox::new("a_destination_failing_midway_reports_the_bytes_that_reached_it");
    source(&sb);
    let proxy = Proxy::start(upstream_of_azurite(), Fault::Pass);
    let table = blob_via(
        &sb,
        proxy.port,
        &format!("{STALLED}\npart_size = \"1MiB\"\nconcurrency = 1"),
    );
    let key = crate::azure::key();
    sb.config_dir_job("", &["nas", "blob"], &format!("{NAS}\n{table}"));
    let child = sb
        .command(&["--json", "backup"])
        .env("AZ_KEY", &key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    // Two blocks stored (journaled), then the server hangs.
    wait_for("two blocks stored", Duration::from_secs(60), || {
        journaled(&sb, "blob").0 >= 2
    });
    proxy.freeze.store(true, Ordering::SeqCst);
    let r = Run::from(child.wait_with_output().expect("wait"));
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    let blob = j["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["name"] == "blob")
        .expect("blob")
        .clone();
    assert_eq!(blob["status"], "failed", "{r:?}");
    assert!(
        blob["bytes_sent"].as_u64().expect("bytes_sent") >= 2 << 20,
        "{r:?}"
    );
}

/// A store that ignores create-if-absent writes (here: a proxy in front of
/// Azurite that renames the If-None-Match header, with a SAS, which signs
/// no header) cannot claim a cluster's slots: `check` says so and fails.
#[test]
fn check_refuses_a_claim_destination_that_ignores_create_if_absent() {
    let sb = Sandbox::new("check_refuses_a_claim_destination_that_ignores_create_if_absent");
    source(&sb);
    let proxy = Proxy::start(
        upstream_of_azurite(),
        Fault::Rewrite {
            from: b"if-none-match:",
            to: b"x-ignored-hdr:",
        },
    );
    let token = crate::azure::admin(&["sas", crate::azure::CONTAINER, "racwdl", "1"]);
    let table = blob_via(&sb, proxy.port, "sas_token_env = \"AZ_SAS\"");
    sb.config_dir_job(
        "cluster = { members = [\"vm\", \"other\"], member_env = \"MEMBER\", run = \"one\" }",
        &["blob"],
        &table,
    );
    let r = Run::from(
        sb.command(&["--json", "check"])
            .env("AZ_SAS", &token)
            .env("MEMBER", "vm")
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        proxy.cuts.load(Ordering::SeqCst) > 0,
        "the header was renamed"
    );
    let checks = r.json()["checks"].to_string();
    assert!(
        checks.contains("ignores create-if-absent") && checks.contains("run = \\\"one\\\""),
        "{r:?}"
    );
    // Straight to Azurite, the same check passes.
    proxy.set(Fault::Pass);
    let r = Run::from(
        sb.command(&["check"])
            .env("AZ_SAS", &token)
            .env("MEMBER", "vm")
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 0, "{r:?}");
}
