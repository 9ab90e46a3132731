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
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`, for the test's lifetime.
struct Proxy {
    port: u16,
    fault: Arc<Mutex<Fault>>,
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
        let (f, c, d) = (fault.clone(), cuts.clone(), done.clone());
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
                pump_pair(client, server, mine, c.clone(), d.clone());
            }
        });
        Proxy {
            port,
            fault,
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
) {
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up_bytes = Arc::new(AtomicUsize::new(0));
    let stalled = Arc::new(AtomicBool::new(false));
    let (ub, st) = (up_bytes.clone(), stalled.clone());
    // Towards the server: where the faults are applied.
    std::thread::spawn(move || {
        let (mut from, mut to) = (client, server);
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let sent = ub.fetch_add(n, Ordering::SeqCst) + n;
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
                    // Hold the connection open, forwarding nothing, until the
                    // client gives up (or the test ends).
                    while !done.load(Ordering::SeqCst) {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
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
            if stalled.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
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
