//! `kind = "sftp"`: a folder on an SSH server, on `russh` and `russh-sftp`
//! (pure Rust).
//!
//! **Why not `ssh2`, the crate the design card names.** libssh2 encrypts
//! with portable C: profiled in `make bench`, 68% of an SFTP upload's CPU
//! went to its chacha20-poly1305, and its AES modes were slower still, so
//! the upload stayed at 1.35× OpenSSH's `sftp` whatever was pipelined.
//! russh uses vectorised ciphers (RustCrypto and aws-lc-rs, the latter
//! already in the build for S3's TLS) and measured 411–448 MiB/s against
//! OpenSSH's 241–332 MiB/s on the same server (`../shared/CRATES.md`).
//! It also sends the server's SFTP requests pipelined from one async task,
//! with no blocking thread per connection.
//!
//! Guarantees:
//! - **The server is who `known_hosts` says.** Every connection checks the
//!   host key against the configured known_hosts file (OpenSSH format,
//!   hashed host names included). An unknown or changed key is refused
//!   before authenticating, and the error shows the fingerprint the server
//!   offered (`SHA256:...`) so a person can compare it with the real one.
//!   The client asks for the key types the file records for the host, as
//!   OpenSSH's client does, so a server with several host keys offers the
//!   pinned one. A key on a `@revoked` line is refused whatever else the
//!   file says, for every host (OpenSSH refuses it for the hosts the line
//!   names; a key revoked anywhere is not trusted here). `@cert-authority`
//!   lines are not used: host certificates are refused.
//! - Authentication: a private key file (ed25519, RSA, ECDSA; passphrase from
//!   an environment variable) or a password from an environment variable.
//!   Secrets are read when connecting and never appear in errors or Debug.
//! - The root folder must exist (a typo never creates a tree elsewhere);
//!   folders below it are created as needed.
//! - Uploads grow a hidden partial file (`.<name>.<upload>.partial`) beside
//!   the target, one part after the other (`parts_out_of_order = false`),
//!   each written at its offset and fsync'd (`fsync@openssh.com`) before
//!   its receipt is returned. A resumed upload checks the partial file's
//!   size first: shorter than the journal says means it was damaged, and
//!   the volume restarts. Completion cuts what a longer attempt left and
//!   renames into place (the protocol is `crate::partial`'s); readers never
//!   see a half-written object under its name.
//! - **Rename:** completion sends SSH_FXP_RENAME (version 3, not the
//!   `posix-rename@openssh.com` extension). OpenSSH implements it as link +
//!   unlink: atomic, and it refuses to replace an existing file, which is
//!   what create-only writes need: a target that exists fails with
//!   `AlreadyExists` and nothing is removed (the upload engine then tells
//!   its own lost completion from another writer's object).
//! - `put` writes a hidden temp file and renames it the same way.
//!
//! The partial-file protocol is synchronous (the path and FTP backends share
//! it), so calls run on tokio's blocking pool, on a connection taken from a
//! small pool (a connection that failed is dropped, not reused), and wait
//! there for russh's futures; russh's own tasks run on the runtime. Writes
//! go out as up to [`WRITES_IN_FLIGHT`] requests of [`WRITE_PACKET`] bytes
//! before the first answer is awaited, as OpenSSH's `sftp` does.

mod settings;

pub use settings::SftpSettings;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io::SeekFrom;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use russh::client::{self, AuthResult};
use russh::keys::{
    Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate, known_hosts,
};
use russh::{Preferred, cipher};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::fs::File;
use russh_sftp::client::{Config as SftpConfig, SftpSession};
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, ReadBuf};
use tokio_util::io::ReaderStream;

use crate::files::{
    Found, Pool, READ_CHUNK, clamp_range, enters, file_tree_capabilities, folder_of,
    on_blocking_pool, upload_gone,
};
use crate::partial::{self, FileOps};
use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, ListStream, Part, PartReceipt, Readiness,
    Result, Secret, UploadId, validate_key,
};

/// How the client proves who it is.
#[derive(Clone)]
pub enum SftpAuth {
    /// A private key file.
    KeyFile {
        /// Where the private key is (OpenSSH or PEM format).
        path: PathBuf,
        /// The environment variable holding its passphrase, if it has one.
        passphrase_env: Option<String>,
    },
    /// A password read from an environment variable when connecting.
    PasswordEnv {
        /// The environment variable's name.
        env: String,
    },
    /// A password given directly (tests and embedders).
    Password(Secret),
}

impl fmt::Debug for SftpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SftpAuth::KeyFile {
                path,
                passphrase_env,
            } => f
                .debug_struct("KeyFile")
                .field("path", path)
                .field("passphrase_env", passphrase_env)
                .finish(),
            SftpAuth::PasswordEnv { env } => {
                f.debug_struct("PasswordEnv").field("env", env).finish()
            }
            SftpAuth::Password(_) => f.write_str("Password(***)"),
        }
    }
}

/// An SFTP destination's settings.
#[derive(Debug, Clone)]
pub struct SftpOptions {
    /// The server's host name or address.
    pub host: String,
    /// The SSH port.
    pub port: u16,
    /// The login user.
    pub user: String,
    /// How the client proves who it is.
    pub auth: SftpAuth,
    /// OpenSSH-format known_hosts file the server's key must be in.
    pub known_hosts: PathBuf,
    /// The root folder on the server (absolute, or relative to the login folder).
    pub root: String,
    /// Connect and per-call timeout.
    pub timeout: Duration,
}

/// Bytes in one SFTP write request: OpenSSH's sftp-server takes messages of
/// up to 256 KiB, and its `limits@openssh.com` answer lowers this if needed.
const WRITE_PACKET: u32 = 256 * 1024;
/// Write requests sent before the first answer is awaited (4 MiB at most).
const WRITES_IN_FLIGHT: usize = 16;
/// Backups hold a database's data: files are created readable by their
/// owner only (the server's umask may only take more away).
const FILE_MODE: u32 = 0o600;
/// Idle connections kept for reuse.
const POOL_SIZE: usize = 4;
/// How often an idle connection tells the server it is alive.
const KEEPALIVE: Duration = Duration::from_secs(30);

struct Conn {
    // Field order is drop order: the SFTP channel closes before its session.
    sftp: SftpSession,
    session: client::Handle<HostCheck>,
}

/// An SFTP destination: a folder on the server, reached through a small
/// pool of SSH connections.
#[derive(Clone)]
pub struct SftpBackend {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    options: SftpOptions,
    pool: Pool<Conn>,
}

impl fmt::Debug for SftpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpBackend")
            .field("name", &self.inner.name)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl SftpBackend {
    /// A backend named `name` (the destination's name); it connects at its
    /// first call.
    pub fn new(name: impl Into<String>, options: SftpOptions) -> SftpBackend {
        SftpBackend {
            inner: Arc::new(Inner {
                name: name.into(),
                options,
                pool: Pool::new(POOL_SIZE),
            }),
        }
    }

    /// Writes `part` into the upload's partial file after checking the bytes
    /// before it are there; with `sync`, waits for the server's fsync too.
    async fn send_part(
        &self,
        key: &str,
        upload: &UploadId,
        part: Part,
        sync: bool,
    ) -> Result<PartReceipt> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        self.blocking(key, move |inner, remote| {
            let mut files = RemoteFiles {
                inner,
                remote,
                sync,
            };
            partial::write_part(&mut files, &key_owned, &upload, &part, true)
        })
        .await
    }

    /// Runs `f` with a pooled connection on the blocking pool; errors get the
    /// destination and `key`.
    async fn blocking<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &Remote) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        on_blocking_pool(&self.inner.name, key, move || {
            let rt = tokio::runtime::Handle::current();
            inner.pool.with(
                || rt.block_on(inner.connect()),
                |conn| !conn.session.is_closed(),
                |conn| {
                    f(
                        &inner,
                        &Remote {
                            rt: &rt,
                            sftp: &conn.sftp,
                        },
                    )
                },
            )
        })
        .await
    }
}

/// A key as OpenSSH prints it: its type and its SHA-256 fingerprint.
fn fingerprint(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

/// Maps an SFTP error; `what` says what was being done, to what.
fn sftp_error(what: impl Into<String>, e: SftpError) -> Error {
    let what = what.into();
    match e {
        SftpError::Status(status) => {
            let code = status.status_code;
            let said = if status.error_message.trim().is_empty() {
                code.to_string()
            } else {
                status.error_message
            };
            let kind = match code {
                StatusCode::NoSuchFile => ErrorKind::NotFound,
                StatusCode::PermissionDenied => ErrorKind::PermissionDenied,
                StatusCode::OpUnsupported => ErrorKind::Unsupported,
                // The connection itself broke: a new one may do better.
                StatusCode::NoConnection | StatusCode::ConnectionLost => {
                    return Error::new(ErrorKind::Unexpected, format!("{what}: {said}"))
                        .temporary();
                }
                _ => ErrorKind::Unexpected,
            };
            let err = Error::new(kind, format!("{what}: {said}"));
            match code {
                StatusCode::PermissionDenied => {
                    err.with_hint("check the SFTP user's permissions on that folder")
                }
                _ => err,
            }
        }
        SftpError::Timeout => Error::new(
            ErrorKind::Unexpected,
            format!("{what}: the server did not answer in time"),
        )
        .temporary()
        .with_hint("check the server's load and the network; raise `timeout` if it is slow"),
        // Closed channels, broken packets: try again on a new connection.
        other => Error::new(ErrorKind::Unexpected, format!("{what}: {other}")).temporary(),
    }
}

/// Whether `e` is the server saying "no such file".
fn is_missing(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile)
}

fn io_error(what: String, e: std::io::Error) -> Error {
    // russh-sftp reports failed writes, closed channels and timeouts as
    // io::Error: a new connection is worth a try.
    Error::from_io(what, e).temporary()
}

/// The SSH client's side of the handshake: it checks the server's host key
/// against the keys known_hosts records for the host, and keeps its
/// verdict for the error message.
struct HostCheck {
    /// `host` or `[host]:port`, as known_hosts writes it.
    host: String,
    /// The keys known_hosts records for the host, with their line numbers.
    recorded: Vec<(usize, PublicKey)>,
    /// The keys on its `@revoked` lines, with their line numbers.
    revoked: Vec<(usize, PublicKey)>,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

/// What the known_hosts check said about the key the server offered.
#[derive(Debug, PartialEq)]
enum Verdict {
    Match,
    /// known_hosts records another key of the same type, on this line.
    Mismatch {
        offered: String,
        line: usize,
    },
    NotFound {
        offered: String,
    },
    /// known_hosts marks the offered key `@revoked`, on this line.
    Revoked {
        offered: String,
        line: usize,
    },
    Certificate,
}

impl client::Handler for HostCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let verdict = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                verdict_for(&self.recorded, &self.revoked, key)
            }
            PublicKeyOrCertificate::Certificate(_) => Verdict::Certificate,
        };
        let accept = matches!(verdict, Verdict::Match);
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(verdict);
        }
        Ok(accept)
    }
}

/// What known_hosts (its keys for the host and its revoked keys, with
/// their line numbers) says of the key the server offered: a revoked key
/// is refused first; then only a key of the same type can match or
/// contradict it, as in OpenSSH.
fn verdict_for(
    recorded: &[(usize, PublicKey)],
    revoked: &[(usize, PublicKey)],
    offered: &PublicKey,
) -> Verdict {
    if let Some((line, _)) = revoked
        .iter()
        .find(|(_, k)| k.key_data() == offered.key_data())
    {
        return Verdict::Revoked {
            offered: fingerprint(offered),
            line: *line,
        };
    }
    let same_type = recorded
        .iter()
        .filter(|(_, k)| k.algorithm() == offered.algorithm());
    let mut contradicting = None;
    for (line, k) in same_type {
        if k.key_data() == offered.key_data() {
            return Verdict::Match;
        }
        contradicting.get_or_insert(*line);
    }
    match contradicting {
        Some(line) => Verdict::Mismatch {
            offered: fingerprint(offered),
            line,
        },
        None => Verdict::NotFound {
            offered: fingerprint(offered),
        },
    }
}

/// The line of `text` that russh's known_hosts reader numbers `counted`:
/// it counts every line but comments, so after a comment its numbers fall
/// behind the file's, and an error would send the reader to the wrong line.
fn file_line(text: &str, counted: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
        .nth(counted.saturating_sub(1))
        .map_or(counted, |(i, _)| i + 1)
}

/// The keys of `text`'s `@revoked` lines (an OpenSSH known_hosts file),
/// with their line numbers: `@revoked <hosts> <type> <base64> [comment]`.
/// A revoked key that cannot be read is an error: it must not be skipped.
fn revoked_keys(text: &str) -> std::result::Result<Vec<(usize, PublicKey)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("@revoked") {
            continue;
        }
        let (_hosts, kind, b64) = (fields.next(), fields.next(), fields.next());
        let key = match (kind, b64) {
            (Some(kind), Some(b64)) => PublicKey::from_openssh(&format!("{kind} {b64}"))
                .map_err(|e| format!("line {}: a @revoked key that cannot be read ({e})", i + 1))?,
            _ => return Err(format!("line {}: a @revoked line without a key", i + 1)),
        };
        out.push((i + 1, key));
    }
    Ok(out)
}

/// The error for a host key known_hosts refused: `host` as known_hosts
/// writes it, `options` for the command that adds the key.
fn refusal(verdict: Option<Verdict>, host: &str, options: &SftpOptions) -> Error {
    let kh = options.known_hosts.display();
    match verdict {
        Some(Verdict::Mismatch { offered, line }) => Error::new(
            ErrorKind::ConfigInvalid,
            format!(
                "the host key of {host} does NOT match {kh} (line {line}; the server offered {offered}); refusing to connect"
            ),
        )
        .with_hint(
            "either the server was reinstalled or re-keyed, or someone is intercepting the connection: confirm the fingerprint with the server's administrator before replacing the line in known_hosts",
        ),
        Some(Verdict::NotFound { offered }) => Error::new(
            ErrorKind::ConfigInvalid,
            format!(
                "the host key of {host} is not in {kh} (the server offered {offered}); refusing to connect"
            ),
        )
        .with_hint(format!(
            "compare that fingerprint with the server's own (ssh-keygen -lf on the server's host key), then add it: ssh-keyscan -p {} {} >> {kh}",
            options.port, options.host
        )),
        Some(Verdict::Revoked { offered, line }) => Error::new(
            ErrorKind::ConfigInvalid,
            format!(
                "the host key of {host} is marked @revoked in {kh} (line {line}; the server offered {offered}); refusing to connect"
            ),
        )
        .with_hint(
            "the key was revoked on purpose: ask the server's administrator for the server's new host key, and do not remove the @revoked line to get past this",
        ),
        Some(Verdict::Certificate) => Error::new(
            ErrorKind::ConfigInvalid,
            format!("{host} offered a host certificate; refusing to connect"),
        )
        .with_hint(format!("pin the server's plain host key in {kh}")),
        Some(Verdict::Match) | None => Error::new(
            ErrorKind::ConfigInvalid,
            format!("the host key of {host} was refused"),
        ),
    }
}

/// The host key types to ask for: those known_hosts records for the host,
/// in russh's order of preference (all of them when it records none).
fn host_key_types(recorded: &[(usize, PublicKey)]) -> Vec<Algorithm> {
    let default = Preferred::DEFAULT.key;
    let same = |a: &Algorithm, b: &Algorithm| match (a, b) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => a == b,
    };
    let wanted: Vec<Algorithm> = default
        .iter()
        .filter(|a| recorded.iter().any(|(_, k)| same(&k.algorithm(), a)))
        .cloned()
        .collect();
    if wanted.is_empty() {
        default.to_vec()
    } else {
        wanted
    }
}

/// The ciphers to offer, best first. Where the CPU has AES instructions,
/// AES-GCM comes first: it costs both ends less than chacha20-poly1305
/// (OpenSSH's first choice), and the server's side is half of an upload's
/// CPU (measured in `make bench`: 0.9× OpenSSH's `sftp` with AES-GCM, 1.25×
/// with chacha20-poly1305). Elsewhere russh's own order.
fn ciphers() -> Cow<'static, [cipher::Name]> {
    const AES_FIRST: &[cipher::Name] = &[
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ];
    if aes_in_hardware() {
        Cow::Borrowed(AES_FIRST)
    } else {
        Preferred::DEFAULT.cipher
    }
}

fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

impl Inner {
    fn endpoint(&self) -> String {
        format!(
            "{}@{}:{}",
            self.options.user, self.options.host, self.options.port
        )
    }

    async fn connect(&self) -> Result<Conn> {
        let o = &self.options;
        match tokio::time::timeout(o.timeout, self.connect_within()).await {
            Ok(conn) => conn,
            Err(_) => Err(Error::new(
                ErrorKind::Unexpected,
                format!(
                    "connecting to {} took longer than {:?}",
                    self.endpoint(),
                    o.timeout
                ),
            )
            .temporary()
            .with_hint(
                "check that the SSH server runs and is reachable; raise `timeout` if it is slow",
            )),
        }
    }

    async fn connect_within(&self) -> Result<Conn> {
        let o = &self.options;
        let kh_path = &o.known_hosts;
        let kh_text = match std::fs::read(kh_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return Err(Error::from_io(
                format!("cannot read known_hosts file {}", kh_path.display()),
                e,
            )
            .permanent()
            .with_hint(format!(
                "create it with the server's key: ssh-keyscan -p {} {} >> {} (then compare the fingerprint with the server's own: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)",
                o.port,
                o.host,
                kh_path.display()
            ))),
        };
        let revoked = revoked_keys(&kh_text).map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("cannot parse known_hosts file {}: {e}", kh_path.display()),
            )
            .with_hint("it must be in OpenSSH's known_hosts format")
        })?;
        let recorded: Vec<(usize, PublicKey)> =
            known_hosts::known_host_keys_path(&o.host, o.port, kh_path)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::ConfigInvalid,
                        format!("cannot parse known_hosts file {}: {e}", kh_path.display()),
                    )
                    .with_hint("it must be in OpenSSH's known_hosts format")
                })?
                .into_iter()
                .map(|(counted, key)| (file_line(&kh_text, counted), key))
                .collect();
        let config = client::Config {
            preferred: Preferred {
                key: Cow::Owned(host_key_types(&recorded)),
                cipher: ciphers(),
                ..Preferred::DEFAULT
            },
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: 3,
            nodelay: true,
            ..client::Config::default()
        };
        let verdict = Arc::new(Mutex::new(None));
        let check = HostCheck {
            host: if o.port == 22 {
                o.host.clone()
            } else {
                format!("[{}]:{}", o.host, o.port)
            },
            recorded,
            revoked,
            verdict: verdict.clone(),
        };
        let host_label = check.host.clone();
        let mut session =
            match client::connect(Arc::new(config), (o.host.as_str(), o.port), check).await {
                Ok(s) => s,
                Err(russh::Error::UnknownKey) => {
                    let v = verdict.lock().ok().and_then(|mut v| v.take());
                    return Err(refusal(v, &host_label, o));
                }
                Err(russh::Error::IO(e)) => {
                    return Err(Error::from_io(
                        format!("cannot connect to {}:{}", o.host, o.port),
                        e,
                    )
                    .temporary()
                    .with_hint(
                        "check `host` and `port`, and that the SSH server runs and is reachable",
                    ));
                }
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Unexpected,
                        format!("SSH handshake with {}:{} failed: {e}", o.host, o.port),
                    )
                    .temporary());
                }
            };
        self.authenticate(&mut session).await?;
        let lost = |what: &str, e: russh::Error| {
            Error::new(
                ErrorKind::Unexpected,
                format!("cannot start SFTP on {}: {what}: {e}", self.endpoint()),
            )
            .temporary()
        };
        let channel = session
            .channel_open_session()
            .await
            .map_err(|e| lost("opening a channel", e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| lost("asking for the sftp subsystem", e))?;
        let sftp = SftpSession::new_with_config(
            channel.into_stream(),
            SftpConfig {
                max_write_packet_len: WRITE_PACKET,
                max_concurrent_writes: WRITES_IN_FLIGHT,
                request_timeout_secs: o.timeout.as_secs().max(1),
                ..SftpConfig::default()
            },
        )
        .await
        .map_err(|e| sftp_error(format!("cannot start SFTP on {}", self.endpoint()), e))?;
        Ok(Conn { sftp, session })
    }

    async fn authenticate(&self, session: &mut client::Handle<HostCheck>) -> Result<()> {
        let o = &self.options;
        let env = crate::secret::from_env;
        let refused = |e: russh::Error| {
            Error::new(
                ErrorKind::Unexpected,
                format!("login as {} failed: {e}", self.endpoint()),
            )
            .temporary()
        };
        let result = match &o.auth {
            SftpAuth::KeyFile {
                path,
                passphrase_env,
            } => {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(Error::from_io(
                        format!("cannot read key_file {}", path.display()),
                        e,
                    )
                    .permanent()
                    .with_hint("point key_file at the private key (OpenSSH or PEM format)"));
                }
                let passphrase = match passphrase_env {
                    Some(var) => Some(env(var, "key_passphrase_env")?),
                    None => None,
                };
                let key = russh::keys::load_secret_key(path, passphrase.as_ref().map(|p| p.expose()))
                    .map_err(|e| {
                        let err = Error::new(
                            ErrorKind::ConfigInvalid,
                            format!("cannot load key_file {}: {e}", path.display()),
                        );
                        match e {
                            russh::keys::Error::KeyIsEncrypted => err.with_hint(
                                "the key has a passphrase: name the variable holding it in key_passphrase_env",
                            ),
                            _ => err.with_hint(
                                "key_file must be a private key in OpenSSH or PEM format (and key_passphrase_env its passphrase, if it has one)",
                            ),
                        }
                    })?;
                let hash = if key.algorithm().is_rsa() {
                    session
                        .best_supported_rsa_hash()
                        .await
                        .map_err(refused)?
                        .flatten()
                } else {
                    None
                };
                session
                    .authenticate_publickey(
                        &o.user,
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
            }
            SftpAuth::PasswordEnv { env: var } => {
                let password = env(var, "password_env")?;
                session
                    .authenticate_password(&o.user, password.expose())
                    .await
            }
            SftpAuth::Password(p) => session.authenticate_password(&o.user, p.expose()).await,
        };
        match result.map_err(refused)? {
            AuthResult::Success => Ok(()),
            AuthResult::Failure { .. } => {
                let how = match &o.auth {
                    SftpAuth::KeyFile { path, .. } => format!(
                        "check that {}'s public key is in the user's authorized_keys on the server (and the passphrase, if any)",
                        path.display()
                    ),
                    _ => "check the user name and the password (the password itself is never printed)".to_string(),
                };
                Err(Error::new(
                    ErrorKind::Unauthenticated,
                    format!("{} did not accept the login", self.endpoint()),
                )
                .with_hint(how))
            }
        }
    }

    /// The server path of `key` (or of the root for "").
    fn path_of(&self, key: &str) -> Result<String> {
        if !key.is_empty() {
            validate_key(key)?;
        }
        let root = self.options.root.as_str();
        let absolute = root.starts_with('/');
        let trimmed = root.trim_end_matches('/');
        Ok(match (trimmed.is_empty(), key.is_empty()) {
            (true, true) if absolute => "/".to_string(),
            (true, true) => ".".to_string(),
            (true, false) if absolute => format!("/{key}"),
            (true, false) => key.to_string(),
            (false, true) => trimmed.to_string(),
            (false, false) => format!("{trimmed}/{key}"),
        })
    }

    /// The root must exist and be a folder (offsite never creates it).
    fn check_root(&self, remote: &Remote) -> Result<()> {
        let root = self.path_of("")?;
        match remote.run(remote.sftp.metadata(root.as_str())) {
            Ok(st) if st.is_dir() => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("{root} on {} is not a folder", self.endpoint()),
            )
            .with_hint("point `path` at a folder on the server")),
            Err(e) if is_missing(&e) => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("{root} does not exist on {}", self.endpoint()),
            )
            .with_hint("create the folder on the server (offsite creates folders below `path`, never `path` itself)")),
            Err(e) => Err(sftp_error(format!("cannot stat {root}"), e)),
        }
    }

    /// Creates the folders of `key` below the root.
    fn make_dirs(&self, remote: &Remote, key: &str) -> Result<()> {
        validate_key(key)?;
        let components: Vec<&str> = key.split('/').collect();
        let is_dir = |dir: &str| remote.run(remote.sftp.metadata(dir)).map(|st| st.is_dir());
        for depth in 1..components.len() {
            let dir = self.path_of(&components[..depth].join("/"))?;
            match is_dir(&dir) {
                Ok(true) => continue,
                Ok(false) => {
                    return Err(Error::new(
                        ErrorKind::Precondition,
                        format!("{dir} exists and is not a folder"),
                    ));
                }
                Err(_) => {}
            }
            if let Err(e) = remote.run(remote.sftp.create_dir(dir.as_str())) {
                // Another writer may have made it meanwhile (OpenSSH answers FAILURE).
                if !matches!(is_dir(&dir), Ok(true)) {
                    return Err(sftp_error(format!("cannot create folder {dir}"), e));
                }
            }
        }
        Ok(())
    }

    /// Moves `from` to `to`, never over an existing `to`: SFTP's own rename
    /// (version 3, not the posix-rename extension) refuses an existing
    /// target, and OpenSSH's server makes it a hard link then an unlink, so
    /// two writers cannot both win.
    fn rename_into_place(&self, remote: &Remote, from: &str, to: &str) -> Result<()> {
        match remote.run(remote.sftp.rename(from, to)) {
            Ok(()) => Ok(()),
            Err(first) => {
                if remote.run(remote.sftp.symlink_metadata(to)).is_ok() {
                    Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("{to} already exists; it is never overwritten"),
                    ))
                } else {
                    Err(sftp_error(format!("cannot rename {from} to {to}"), first))
                }
            }
        }
    }
}

/// A pooled connection's SFTP session, used from a blocking-pool thread.
struct Remote<'a> {
    rt: &'a tokio::runtime::Handle,
    sftp: &'a SftpSession,
}

impl Remote<'_> {
    /// Waits for `f` on this thread (a blocking-pool thread, never a runtime
    /// worker); russh's tasks make progress on the runtime meanwhile.
    fn run<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Opens `path` for writing with `flags` (new files get [`FILE_MODE`]).
    fn open(&self, path: &str, flags: OpenFlags) -> std::result::Result<File, SftpError> {
        let attrs = FileAttributes {
            permissions: Some(FILE_MODE),
            ..FileAttributes::empty()
        };
        self.run(self.sftp.open_with_flags_and_attributes(path, flags, attrs))
    }

    /// Writes all of `body` at the file's position, pipelined, and waits
    /// for every answer; with `sync`, then for the fsync
    /// (`fsync@openssh.com`; a server without it is taken as it is). Closes
    /// the file.
    fn write_synced(&self, mut file: File, path: &str, body: &[u8], sync: bool) -> Result<()> {
        self.run(async {
            file.write_all(body).await?;
            if sync {
                // Waits for every write's answer, then asks for the fsync.
                file.flush().await?;
            }
            // Waits for every write's answer, then closes.
            file.shutdown().await
        })
        .map_err(|e| {
            let what = if sync { "write and sync" } else { "write" };
            io_error(format!("cannot {what} {path}"), e)
        })
    }
}

/// The server's files below the root, for the partial-file protocol.
struct RemoteFiles<'a> {
    inner: &'a Inner,
    remote: &'a Remote<'a>,
    /// Whether each write waits for the server's fsync (every write but
    /// `write_part`'s, which `sync_part` syncs).
    sync: bool,
}

impl<'a> RemoteFiles<'a> {
    /// Files whose every write waits for the server's fsync.
    fn synced(inner: &'a Inner, remote: &'a Remote<'a>) -> RemoteFiles<'a> {
        RemoteFiles {
            inner,
            remote,
            sync: true,
        }
    }
}

impl FileOps for RemoteFiles<'_> {
    fn make_parents(&mut self, path: &str) -> Result<()> {
        self.inner.check_root(self.remote)?;
        self.inner.make_dirs(self.remote, path)
    }

    fn write_new(&mut self, path: &str, body: &[u8]) -> Result<()> {
        let p = self.inner.path_of(path)?;
        let f = self
            .remote
            .open(
                &p,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
            )
            .map_err(|e| sftp_error(format!("cannot create {p}"), e))?;
        let written = self.remote.write_synced(f, &p, body, true);
        if written.is_err() {
            let _ = self.remote.run(self.remote.sftp.remove_file(p.as_str()));
        }
        written
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>> {
        let p = self.inner.path_of(path)?;
        match self.remote.run(self.remote.sftp.metadata(p.as_str())) {
            Ok(st) => Ok(Some(st.size.unwrap_or(0))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(sftp_error(format!("cannot stat {p}"), e)),
        }
    }

    fn write_at(&mut self, path: &str, offset: u64, body: &[u8]) -> Result<()> {
        let p = self.inner.path_of(path)?;
        let mut f = match self.remote.open(&p, OpenFlags::WRITE) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Err(upload_gone(path)),
            Err(e) => return Err(sftp_error(format!("cannot open {p}"), e)),
        };
        self.remote
            .run(f.seek(SeekFrom::Start(offset)))
            .map_err(|e| io_error(format!("cannot seek {p}"), e))?;
        self.remote.write_synced(f, &p, body, self.sync)
    }

    fn truncate(&mut self, path: &str, len: u64) -> Result<()> {
        let p = self.inner.path_of(path)?;
        let attrs = FileAttributes {
            size: Some(len),
            ..FileAttributes::empty()
        };
        self.remote
            .run(self.remote.sftp.set_metadata(p.as_str(), attrs))
            .map_err(|e| sftp_error(format!("cannot truncate {p}"), e))
    }

    fn rename_new(&mut self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (self.inner.path_of(from)?, self.inner.path_of(to)?);
        self.inner.rename_into_place(self.remote, &from, &to)
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let p = self.inner.path_of(path)?;
        match self.remote.run(self.remote.sftp.remove_file(p.as_str())) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(sftp_error(format!("cannot remove {p}"), e)),
        }
    }
}

#[async_trait]
impl Backend for SftpBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        file_tree_capabilities(false)
    }

    async fn probe(&self) -> Result<()> {
        self.blocking("", |inner, remote| inner.check_root(remote))
            .await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner, remote| {
            partial::put(&mut RemoteFiles::synced(inner, remote), &key_owned, &body)
        })
        .await
    }

    async fn create_upload(&self, key: &str, _part_size: u64) -> Result<UploadId> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner, remote| {
            partial::create(&mut RemoteFiles::synced(inner, remote), &key_owned)
        })
        .await
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        self.send_part(key, upload, part, true).await
    }

    async fn write_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        self.send_part(key, upload, part, false).await
    }

    async fn sync_part(&self, key: &str, upload: &UploadId, receipt: &PartReceipt) -> Result<()> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        let (index, end) = (receipt.index, receipt.offset + receipt.size);
        self.blocking(key, move |inner, remote| {
            let partial = partial::partial_key(&key_owned, &upload)?;
            let p = inner.path_of(&partial)?;
            // Another handle on the same file: fsync(2) flushes the file, not the handle.
            let file = match remote.open(&p, OpenFlags::WRITE) {
                Ok(f) => f,
                Err(e) if is_missing(&e) => return Err(upload_gone(&partial)),
                Err(e) => return Err(sftp_error(format!("cannot open {p}"), e)),
            };
            // Bytes lost since they were written (the server restarted, the
            // file was cut) must not be journaled as sent.
            let size = remote
                .run(file.metadata())
                .map_err(|e| sftp_error(format!("cannot stat {p}"), e))?
                .size
                .unwrap_or(0);
            if size < end {
                return Err(partial::damaged(
                    &partial,
                    &format!("holds {size} bytes but part {index} ends at {end}"),
                ));
            }
            remote.write_synced(file, &p, &[], true)
        })
        .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<()> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        let parts = parts.to_vec();
        self.blocking(key, move |inner, remote| {
            partial::complete(
                &mut RemoteFiles::synced(inner, remote),
                &key_owned,
                &upload,
                &parts,
            )
        })
        .await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<()> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        self.blocking(key, move |inner, remote| {
            partial::abort(&mut RemoteFiles::synced(inner, remote), &key_owned, &upload)
        })
        .await
    }

    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        validate_key(key)?;
        Ok(Readiness::Ready)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let (name, key_owned) = (self.inner.name.clone(), key.to_string());
        let opened = async {
            let path = self.inner.path_of(key)?;
            // The stream owns its connection (not pooled): it lives as long as the reader.
            let conn = self.inner.connect().await?;
            let mut f = conn.sftp.open(path.as_str()).await.map_err(|e| {
                if is_missing(&e) {
                    Error::new(ErrorKind::NotFound, format!("{path} does not exist"))
                } else {
                    sftp_error(format!("cannot open {path}"), e)
                }
            })?;
            let size = f
                .metadata()
                .await
                .map_err(|e| sftp_error(format!("cannot stat {path}"), e))?
                .size
                .unwrap_or(0);
            let (start, end) = clamp_range(range, size);
            f.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| io_error(format!("cannot seek {path}"), e))?;
            Ok(ConnReader {
                file: f.take(end.saturating_sub(start)),
                _conn: conn,
            })
        };
        let reader = opened
            .await
            .map_err(|e: Error| e.or_destination(&name).or_key(&key_owned))?;
        let stream = ReaderStream::with_capacity(reader, READ_CHUNK).map(move |chunk| {
            chunk.map_err(|e| {
                io_error("read failed".into(), e)
                    .with_destination(name.clone())
                    .with_key(key_owned.clone())
            })
        });
        Ok(Box::pin(stream))
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        let prefix_owned = prefix.to_string();
        let items = self
            .blocking(prefix, move |inner, remote| {
                inner.check_root(remote)?;
                let dir_part = folder_of(&prefix_owned)?;
                let mut out = Vec::new();
                walk_for(
                    inner,
                    remote,
                    dir_part,
                    &prefix_owned,
                    &mut Found::Objects(&mut out),
                )?;
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            })
            .await?;
        Ok(Box::pin(futures::stream::iter(items.into_iter().map(Ok))))
    }

    async fn list_leftovers(&self, prefix: &str) -> Result<Vec<crate::Leftover>> {
        let prefix_owned = prefix.to_string();
        self.blocking(prefix, move |inner, remote| {
            let dir = folder_of(&prefix_owned)?;
            let mut out = Vec::new();
            walk_for(
                inner,
                remote,
                dir,
                &prefix_owned,
                &mut Found::Leftovers(&mut out),
            )?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner, remote| {
            let path = inner.path_of(&key_owned)?;
            match remote.run(remote.sftp.remove_file(path.as_str())) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => return Ok(()),
                Err(e) => return Err(sftp_error(format!("cannot delete {path}"), e)),
            }
            // Tidy folders left empty, never the root; a folder still in use stays.
            let parts: Vec<&str> = key_owned.split('/').collect();
            for depth in (1..parts.len()).rev() {
                let dir = inner.path_of(&parts[..depth].join("/"))?;
                if remote.run(remote.sftp.remove_dir(dir.as_str())).is_err() {
                    break;
                }
            }
            Ok(())
        })
        .await
    }
}

/// A remote file and the connection it is read through.
struct ConnReader {
    file: tokio::io::Take<File>,
    _conn: Conn,
}

impl AsyncRead for ConnReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

/// Lists the files under `dir` (a key folder, "" for the root) whose keys
/// start with `prefix` into `out`.
fn walk_for(
    inner: &Inner,
    remote: &Remote,
    dir: &str,
    prefix: &str,
    out: &mut Found,
) -> Result<()> {
    let path = inner.path_of(dir)?;
    let entries = match remote.run(remote.sftp.read_dir(path.as_str())) {
        Ok(e) => e,
        Err(SftpError::Status(s))
            if matches!(s.status_code, StatusCode::NoSuchFile | StatusCode::Failure) =>
        {
            return Ok(());
        }
        Err(e) => return Err(sftp_error(format!("cannot list {path}"), e)),
    };
    for entry in entries {
        let name = entry.file_name();
        if name == "." || name == ".." || name.contains('/') {
            continue;
        }
        let st = entry.metadata();
        let rel = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        if st.is_dir() {
            if enters(&rel, prefix) {
                walk_for(inner, remote, &rel, prefix, out)?;
            }
        } else if st.is_regular() && rel.starts_with(prefix) {
            out.file(&name, rel, st.size.unwrap_or(0), || {
                st.mtime
                    .map(|t| std::time::UNIX_EPOCH + Duration::from_secs(u64::from(t)))
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(root: &str) -> SftpBackend {
        SftpBackend::new(
            "sftp",
            SftpOptions {
                host: "h".into(),
                port: 22,
                user: "u".into(),
                auth: SftpAuth::Password(Secret::new("hunter2-do-not-print")),
                known_hosts: "/k".into(),
                root: root.into(),
                timeout: Duration::from_secs(5),
            },
        )
    }

    #[test]
    fn keys_map_below_the_root() {
        let b = backend("/srv/backups/");
        assert_eq!(b.inner.path_of("a/b c").expect("ok"), "/srv/backups/a/b c");
        assert_eq!(b.inner.path_of("").expect("ok"), "/srv/backups");
        let upload = UploadId("abc".into());
        let partial = partial::partial_key("job/x/manifest.json", &upload).expect("ok");
        assert_eq!(
            b.inner.path_of(&partial).expect("ok"),
            "/srv/backups/job/x/.manifest.json.abc.partial"
        );
        assert!(b.inner.path_of("../etc/passwd").is_err());
        let rel = backend("backups");
        assert_eq!(rel.inner.path_of("a").expect("ok"), "backups/a");
        let home = backend("");
        assert_eq!(home.inner.path_of("a/b").expect("ok"), "a/b");
        let partial = partial::partial_key("a", &upload).expect("ok");
        assert_eq!(home.inner.path_of(&partial).expect("ok"), ".a.abc.partial");
        let slash = backend("/");
        assert_eq!(slash.inner.path_of("").expect("ok"), "/");
        assert_eq!(slash.inner.path_of("a/b").expect("ok"), "/a/b");
        assert_eq!(
            slash.inner.path_of(&partial).expect("ok"),
            "/.a.abc.partial"
        );
    }

    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICBdy5Plc1peiNQZVKigTeSwsszyp9SwUa9uVyUz3g1l";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP8D9SGdjjZeK6C86/6k78e24ZBssoSH9bDlsV3Hrbod";
    const EC: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAHPYTZ+t7tV0jTdLatIwGAT0FpXX792epI4PP3Tgz7Nfsv9PiLpHwBlUgNFGrNYeP+4mZmzX/XrSD9iq7y/kFE=";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).expect("a public key")
    }

    #[test]
    fn only_a_recorded_key_of_the_offered_type_matches_or_contradicts() {
        let offered = key(ED_A);
        let fp = fingerprint(&offered);
        assert!(fp.starts_with("ssh-ed25519 SHA256:"), "{fp}");
        // known_hosts lines: (line number, key).
        type Lines<'a> = &'a [(usize, &'a str)];
        let none: Lines = &[];
        let cases: &[(Lines, Lines, Verdict)] = &[
            (&[(1, ED_A)], none, Verdict::Match),
            (&[(1, ED_B), (2, ED_A)], none, Verdict::Match),
            // Revoked wins over a line that records it.
            (
                &[(1, ED_A)],
                &[(9, ED_A)],
                Verdict::Revoked {
                    offered: fp.clone(),
                    line: 9,
                },
            ),
            // Another key revoked changes nothing.
            (&[(1, ED_A)], &[(9, ED_B)], Verdict::Match),
            (
                &[],
                &[(3, EC), (5, ED_A)],
                Verdict::Revoked {
                    offered: fp.clone(),
                    line: 5,
                },
            ),
            (
                &[(4, EC), (7, ED_B)],
                none,
                Verdict::Mismatch {
                    offered: fp.clone(),
                    line: 7,
                },
            ),
            (
                &[(1, EC)],
                none,
                Verdict::NotFound {
                    offered: fp.clone(),
                },
            ),
            (
                &[],
                none,
                Verdict::NotFound {
                    offered: fp.clone(),
                },
            ),
        ];
        let keys = |lines: &[(usize, &str)]| -> Vec<(usize, PublicKey)> {
            lines.iter().map(|(l, k)| (*l, key(k))).collect()
        };
        for (recorded, revoked, want) in cases {
            let (recorded, revoked) = (keys(recorded), keys(revoked));
            assert_eq!(
                &verdict_for(&recorded, &revoked, &offered),
                want,
                "{recorded:?} {revoked:?}"
            );
        }
    }

    #[test]
    fn russh_line_numbers_are_turned_into_the_files() {
        let text = "# pinned by ops\n# another comment\na key\n\n# more\nb key\n";
        // russh numbers "a key" 1, the empty line 2, "b key" 3.
        assert_eq!(file_line(text, 1), 3);
        assert_eq!(file_line(text, 3), 6);
        assert_eq!(file_line("a\nb\n", 2), 2);
        // Past the end (not expected): the number as it came.
        assert_eq!(file_line("a\n", 5), 5);
    }

    #[test]
    fn revoked_lines_are_read_and_a_broken_one_is_an_error() {
        let text = format!(
            "# a comment\nhost.example {ED_B}\n@revoked * {ED_A} old key\n@cert-authority *.example {EC}\n@revoked\thost,other  {EC}\n"
        );
        let got = revoked_keys(&text).expect("parsed");
        assert_eq!(got, vec![(3, key(ED_A)), (5, key(EC))]);
        assert_eq!(revoked_keys("").expect("empty"), vec![]);
        let err = revoked_keys("x\n@revoked * ssh-ed25519\n").expect_err("no key");
        assert!(err.contains("line 2"), "{err}");
        let err = revoked_keys("@revoked * ssh-ed25519 bm90IGEga2V5\n").expect_err("bad key");
        assert!(
            err.contains("line 1") && err.contains("cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn the_client_asks_for_the_key_types_known_hosts_records() {
        let ec = Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP256,
        };
        assert_eq!(
            host_key_types(&[(1, key(EC)), (2, key(ED_B))]),
            [Algorithm::Ed25519, ec.clone()]
        );
        assert_eq!(host_key_types(&[(1, key(EC))]), [ec]);
        assert_eq!(host_key_types(&[]), Preferred::DEFAULT.key.to_vec());
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let text = format!("{:?}", backend("/x"));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
