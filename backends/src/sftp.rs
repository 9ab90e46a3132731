//! `kind = "sftp"`: a folder on an SSH server, on `ssh2` (libssh2, bundled).
//!
//! Guarantees:
//! - **The server is who `known_hosts` says.** Every connection checks the
//!   host key against the configured known_hosts file (OpenSSH format). An
//!   unknown or changed key is refused before authenticating, and the error
//!   shows the fingerprint the server offered (`SHA256:...`) so a person can
//!   compare it with the real one.
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
//! - **Rename:** libssh2 has `posix-rename@openssh.com`, but the `ssh2`
//!   crate exposes neither it nor a raw handle to call it with. So completion
//!   uses SSH_FXP_RENAME. OpenSSH implements that as link + unlink: atomic,
//!   and it refuses to replace an existing file, which is what create-only
//!   writes need: a target that exists fails with `AlreadyExists` and
//!   nothing is removed (the upload engine then tells its own lost
//!   completion from another writer's object).
//! - `put` writes a hidden temp file and renames it the same way.
//!
//! libssh2 is blocking: every call runs on tokio's blocking pool, on a
//! connection taken from a small pool (a connection that failed is dropped,
//! not reused). Writes go out in 1 MiB slices, which libssh2 pipelines
//! (measured in ../shared/CRATES.md: 32 KiB writes reach a third of OpenSSH's
//! `sftp`, 1 MiB about the same).

mod settings;

pub use settings::SftpSettings;

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use ssh2::{
    CheckResult, ErrorCode, FileStat, HashType, HostKeyType, KnownHostFileKind, OpenFlags,
    OpenType, Session, Sftp,
};

use crate::files::{
    Found, Pool, blocking_stream, clamp_range, enters, file_tree_capabilities, folder_of,
    on_blocking_pool, upload_gone,
};
use crate::partial::{self, FileOps};
use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, ListStream, ObjectMeta, Part, PartReceipt,
    Readiness, Result, Secret, UploadId, validate_key,
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

/// Bytes handed to libssh2 per write call (it pipelines within one call).
const WRITE_SLICE: usize = 1 << 20;
/// Backups hold a database's data: files are created readable by their
/// owner only (the server's umask may only take more away).
const FILE_MODE: i32 = 0o600;
/// Idle connections kept for reuse.
const POOL_SIZE: usize = 4;

// SFTP status codes (draft-ietf-secsh-filexfer-02 and later), as libssh2 reports them.
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
const FX_FAILURE: i32 = 4;
const FX_NO_SUCH_PATH: i32 = 10;
const FX_FILE_ALREADY_EXISTS: i32 = 11;
const FX_WRITE_PROTECT: i32 = 12;
const FX_NO_SPACE_ON_FILESYSTEM: i32 = 14;
const FX_QUOTA_EXCEEDED: i32 = 15;
const FX_OP_UNSUPPORTED: i32 = 8;
// libssh2 session errors.
const ERROR_FILE: i32 = -16;
const ERROR_AUTHENTICATION_FAILED: i32 = -18;
const ERROR_PUBLICKEY_UNVERIFIED: i32 = -19;
const ERROR_SFTP_PROTOCOL: i32 = -31;

struct Conn {
    // Field order is drop order: the SFTP channel closes before its session.
    sftp: Sftp,
    _session: Session,
}

/// An SFTP destination: a folder on the server, reached through a small
/// pool of blocking libssh2 sessions.
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

    /// Runs `f` with a pooled connection on the blocking pool; errors get the
    /// destination and `key`.
    async fn blocking<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &Sftp) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        on_blocking_pool(&self.inner.name, key, move || {
            inner
                .pool
                .with(|| inner.connect(), |_| true, |conn| f(&inner, &conn.sftp))
        })
        .await
    }
}

/// The server's host key fingerprint as OpenSSH prints it.
fn fingerprint(session: &Session) -> String {
    let hash = session
        .host_key_hash(HashType::Sha256)
        .map(|h| base64::engine::general_purpose::STANDARD_NO_PAD.encode(h))
        .unwrap_or_else(|| "?".into());
    let kind = match session.host_key().map(|(_, k)| k) {
        Some(HostKeyType::Ed25519) => "ssh-ed25519",
        Some(HostKeyType::Rsa) => "ssh-rsa",
        Some(HostKeyType::Ecdsa256) => "ecdsa-sha2-nistp256",
        Some(HostKeyType::Ecdsa384) => "ecdsa-sha2-nistp384",
        Some(HostKeyType::Ecdsa521) => "ecdsa-sha2-nistp521",
        Some(HostKeyType::Dss) => "ssh-dss",
        _ => "unknown",
    };
    format!("{kind} SHA256:{hash}")
}

/// Maps a libssh2 error; `what` says what was being done, to what.
fn ssh_error(what: impl Into<String>, e: ssh2::Error) -> Error {
    let what = what.into();
    let message = format!("{what}: {}", e.message());
    match e.code() {
        ErrorCode::SFTP(code) => {
            let kind = match code {
                FX_NO_SUCH_FILE | FX_NO_SUCH_PATH => ErrorKind::NotFound,
                FX_PERMISSION_DENIED | FX_WRITE_PROTECT => ErrorKind::PermissionDenied,
                FX_FILE_ALREADY_EXISTS => ErrorKind::AlreadyExists,
                FX_OP_UNSUPPORTED => ErrorKind::Unsupported,
                _ => ErrorKind::Unexpected,
            };
            let err = Error::new(kind, message);
            match code {
                FX_NO_SPACE_ON_FILESYSTEM | FX_QUOTA_EXCEEDED => {
                    err.with_hint("the server's disk or quota is full: free space there")
                }
                FX_PERMISSION_DENIED | FX_WRITE_PROTECT => {
                    err.with_hint("check the SFTP user's permissions on that folder")
                }
                _ => err,
            }
        }
        ErrorCode::Session(code) => match code {
            ERROR_AUTHENTICATION_FAILED | ERROR_PUBLICKEY_UNVERIFIED => {
                Error::new(ErrorKind::Unauthenticated, message)
            }
            ERROR_FILE => Error::new(ErrorKind::ConfigInvalid, message),
            // An SFTP-level answer the server gave: not a broken connection.
            ERROR_SFTP_PROTOCOL => Error::new(ErrorKind::Unexpected, message),
            // Timeouts, closed sockets, key exchange failures: try again on a new connection.
            _ => Error::new(ErrorKind::Unexpected, message).temporary(),
        },
    }
}

fn is_sftp(e: &ssh2::Error, codes: &[i32]) -> bool {
    matches!(e.code(), ErrorCode::SFTP(c) if codes.contains(&c))
}

impl Inner {
    fn endpoint(&self) -> String {
        format!(
            "{}@{}:{}",
            self.options.user, self.options.host, self.options.port
        )
    }

    fn connect(&self) -> Result<Conn> {
        let o = &self.options;
        let addrs: Vec<_> = (o.host.as_str(), o.port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::from_io(format!("cannot resolve {}", o.host), e)
                    .temporary()
                    .with_hint("check `host`, and the DNS of this machine")
            })?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, o.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(t), _) => t,
            (None, e) => {
                let e = e.unwrap_or_else(|| std::io::Error::other("no address"));
                return Err(Error::from_io(
                    format!("cannot connect to {}:{}", o.host, o.port),
                    e,
                )
                .with_hint("check `host` and `port`, and that the SSH server runs and is reachable"));
            }
        };
        let mut session =
            Session::new().map_err(|e| ssh_error("cannot start an SSH session", e))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(u32::try_from(o.timeout.as_millis()).unwrap_or(u32::MAX));
        session
            .handshake()
            .map_err(|e| ssh_error(format!("SSH handshake with {}:{}", o.host, o.port), e))?;
        self.check_host_key(&session)?;
        self.authenticate(&session)?;
        session.set_keepalive(true, 30);
        let sftp = session
            .sftp()
            .map_err(|e| ssh_error(format!("cannot start SFTP on {}", self.endpoint()), e))?;
        Ok(Conn {
            sftp,
            _session: session,
        })
    }

    fn check_host_key(&self, session: &Session) -> Result<()> {
        let o = &self.options;
        let kh_path = &o.known_hosts;
        let (key, _) = session.host_key().ok_or_else(|| {
            Error::new(ErrorKind::Unexpected, "the server sent no host key").temporary()
        })?;
        let mut kh = session
            .known_hosts()
            .map_err(|e| ssh_error("cannot read known hosts", e))?;
        if let Err(e) = std::fs::metadata(kh_path) {
            return Err(Error::from_io(
                format!("cannot read known_hosts file {}", kh_path.display()),
                e,
            )
            .permanent()
            .with_hint(format!(
                "create it with the server's key: ssh-keyscan -p {} {} >> {} (then compare the fingerprint with the server's own: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)",
                o.port,
                o.host,
                kh_path.display()
            )));
        }
        kh.read_file(kh_path, KnownHostFileKind::OpenSSH)
            .map_err(|e| {
                let mut err = ssh_error(
                    format!("cannot parse known_hosts file {}", kh_path.display()),
                    e,
                );
                err = Error::new(ErrorKind::ConfigInvalid, err.to_string());
                err.with_hint("it must be in OpenSSH's known_hosts format")
            })?;
        let offered = fingerprint(session);
        let host = if o.port == 22 {
            o.host.clone()
        } else {
            format!("[{}]:{}", o.host, o.port)
        };
        match kh.check_port(&o.host, o.port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::Mismatch => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "the host key of {host} does NOT match {} (the server offered {offered}); refusing to connect",
                    kh_path.display()
                ),
            )
            .with_hint(
                "either the server was reinstalled or re-keyed, or someone is intercepting the connection: confirm the fingerprint with the server's administrator before replacing the line in known_hosts",
            )),
            CheckResult::NotFound => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "the host key of {host} is not in {} (the server offered {offered}); refusing to connect",
                    kh_path.display()
                ),
            )
            .with_hint(format!(
                "compare that fingerprint with the server's own (ssh-keygen -lf on the server's host key), then add it: ssh-keyscan -p {} {} >> {}",
                o.port,
                o.host,
                kh_path.display()
            ))),
            CheckResult::Failure => Err(Error::new(
                ErrorKind::Unexpected,
                format!("cannot check the host key of {host} against {}", kh_path.display()),
            )),
        }
    }

    fn authenticate(&self, session: &Session) -> Result<()> {
        let o = &self.options;
        let env = crate::secret::from_env;
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
                session.userauth_pubkey_file(
                    &o.user,
                    None,
                    path,
                    passphrase.as_ref().map(|p| p.expose()),
                )
            }
            SftpAuth::PasswordEnv { env: var } => {
                let password = env(var, "password_env")?;
                session.userauth_password(&o.user, password.expose())
            }
            SftpAuth::Password(p) => session.userauth_password(&o.user, p.expose()),
        };
        match result {
            Ok(()) if session.authenticated() => Ok(()),
            Ok(()) => Err(Error::new(
                ErrorKind::Unauthenticated,
                format!("{} did not accept the login", self.endpoint()),
            )),
            Err(e) => {
                let err = ssh_error(format!("login as {}", self.endpoint()), e);
                let how = match &o.auth {
                    SftpAuth::KeyFile { path, .. } => format!(
                        "check that {}'s public key is in the user's authorized_keys on the server (and the passphrase, if any)",
                        path.display()
                    ),
                    _ => "check the user name and the password (the password itself is never printed)".to_string(),
                };
                Err(Error::new(ErrorKind::Unauthenticated, err.to_string()).with_hint(how))
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
    fn check_root(&self, sftp: &Sftp) -> Result<()> {
        let root = self.path_of("")?;
        match sftp.stat(Path::new(&root)) {
            Ok(st) if st.is_dir() => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("{root} on {} is not a folder", self.endpoint()),
            )
            .with_hint("point `path` at a folder on the server")),
            Err(e) if is_sftp(&e, &[FX_NO_SUCH_FILE, FX_NO_SUCH_PATH]) => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("{root} does not exist on {}", self.endpoint()),
            )
            .with_hint("create the folder on the server (offsite creates folders below `path`, never `path` itself)")),
            Err(e) => Err(ssh_error(format!("cannot stat {root}"), e)),
        }
    }

    /// Creates the folders of `key` below the root.
    fn make_dirs(&self, sftp: &Sftp, key: &str) -> Result<()> {
        validate_key(key)?;
        let components: Vec<&str> = key.split('/').collect();
        for depth in 1..components.len() {
            let dir = self.path_of(&components[..depth].join("/"))?;
            let p = Path::new(&dir);
            match sftp.stat(p) {
                Ok(st) if st.is_dir() => continue,
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::Precondition,
                        format!("{dir} exists and is not a folder"),
                    ));
                }
                Err(_) => {}
            }
            if let Err(e) = sftp.mkdir(p, 0o755) {
                // Another writer may have made it meanwhile (OpenSSH answers FAILURE).
                match sftp.stat(p) {
                    Ok(st) if st.is_dir() => {}
                    _ => return Err(ssh_error(format!("cannot create folder {dir}"), e)),
                }
            }
        }
        Ok(())
    }

    /// Moves `from` to `to`, never over an existing `to`: SFTP's own rename
    /// (version 3, not the posix-rename extension) refuses an existing
    /// target, and OpenSSH's server makes it a hard link then an unlink, so
    /// two writers cannot both win.
    fn rename_into_place(&self, sftp: &Sftp, from: &str, to: &str) -> Result<()> {
        let (f, t) = (Path::new(from), Path::new(to));
        // No flags: libssh2 sends a plain SSH_FXP_RENAME.
        match sftp.rename(f, t, Some(ssh2::RenameFlags::empty())) {
            Ok(()) => Ok(()),
            Err(first) => {
                if sftp.lstat(t).is_ok() {
                    Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("{to} already exists; it is never overwritten"),
                    ))
                } else {
                    Err(ssh_error(format!("cannot rename {from} to {to}"), first))
                }
            }
        }
    }
}

/// Writes all of `body` in [`WRITE_SLICE`]s.
fn write_slices(file: &mut ssh2::File, body: &[u8]) -> std::io::Result<()> {
    for slice in body.chunks(WRITE_SLICE) {
        file.write_all(slice)?;
    }
    Ok(())
}

/// fsync@openssh.com; servers without the extension are taken as they are.
fn fsync(file: &mut ssh2::File, path: &str) -> Result<()> {
    match file.fsync() {
        Ok(()) => Ok(()),
        Err(e) if is_sftp(&e, &[FX_OP_UNSUPPORTED]) => Ok(()),
        Err(e) if matches!(e.code(), ErrorCode::Session(ERROR_SFTP_PROTOCOL)) => Ok(()),
        Err(e) => Err(ssh_error(format!("cannot sync {path}"), e)),
    }
}

fn io_error(what: String, e: std::io::Error) -> Error {
    // ssh2 wraps its own errors in io::Error; a broken channel is worth a new connection.
    Error::from_io(what, e).temporary()
}

/// The server's files below the root, for the partial-file protocol.
struct RemoteFiles<'a> {
    inner: &'a Inner,
    sftp: &'a Sftp,
}

impl FileOps for RemoteFiles<'_> {
    fn make_parents(&mut self, path: &str) -> Result<()> {
        self.inner.check_root(self.sftp)?;
        self.inner.make_dirs(self.sftp, path)
    }

    fn write_new(&mut self, path: &str, body: &[u8]) -> Result<()> {
        let p = self.inner.path_of(path)?;
        let mut f = self
            .sftp
            .open_mode(
                Path::new(&p),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                FILE_MODE,
                OpenType::File,
            )
            .map_err(|e| ssh_error(format!("cannot create {p}"), e))?;
        let written = write_slices(&mut f, body)
            .map_err(|e| io_error(format!("cannot write {p}"), e))
            .and_then(|()| fsync(&mut f, &p));
        if written.is_err() {
            let _ = self.sftp.unlink(Path::new(&p));
        }
        written
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>> {
        let p = self.inner.path_of(path)?;
        match self.sftp.stat(Path::new(&p)) {
            Ok(st) => Ok(Some(st.size.unwrap_or(0))),
            Err(e) if is_sftp(&e, &[FX_NO_SUCH_FILE, FX_NO_SUCH_PATH]) => Ok(None),
            Err(e) => Err(ssh_error(format!("cannot stat {p}"), e)),
        }
    }

    fn write_at(&mut self, path: &str, offset: u64, body: &[u8]) -> Result<()> {
        let p = self.inner.path_of(path)?;
        let mut f =
            match self
                .sftp
                .open_mode(Path::new(&p), OpenFlags::WRITE, FILE_MODE, OpenType::File)
            {
                Ok(f) => f,
                Err(e) if is_sftp(&e, &[FX_NO_SUCH_FILE, FX_NO_SUCH_PATH]) => {
                    return Err(upload_gone(path));
                }
                Err(e) => return Err(ssh_error(format!("cannot open {p}"), e)),
            };
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error(format!("cannot seek {p}"), e))?;
        write_slices(&mut f, body).map_err(|e| io_error(format!("cannot write {p}"), e))?;
        fsync(&mut f, &p)
    }

    fn truncate(&mut self, path: &str, len: u64) -> Result<()> {
        let p = self.inner.path_of(path)?;
        let st = FileStat {
            size: Some(len),
            uid: None,
            gid: None,
            perm: None,
            atime: None,
            mtime: None,
        };
        self.sftp
            .setstat(Path::new(&p), st)
            .map_err(|e| ssh_error(format!("cannot truncate {p}"), e))
    }

    fn rename_new(&mut self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (self.inner.path_of(from)?, self.inner.path_of(to)?);
        self.inner.rename_into_place(self.sftp, &from, &to)
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let p = self.inner.path_of(path)?;
        match self.sftp.unlink(Path::new(&p)) {
            Ok(()) => Ok(()),
            Err(e) if is_sftp(&e, &[FX_NO_SUCH_FILE, FX_NO_SUCH_PATH]) => Ok(()),
            Err(e) => Err(ssh_error(format!("cannot remove {p}"), e)),
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
        self.blocking("", |inner, sftp| inner.check_root(sftp))
            .await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner, sftp| {
            partial::put(&mut RemoteFiles { inner, sftp }, &key_owned, &body)
        })
        .await
    }

    async fn create_upload(&self, key: &str, _part_size: u64) -> Result<UploadId> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner, sftp| {
            partial::create(&mut RemoteFiles { inner, sftp }, &key_owned)
        })
        .await
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        self.blocking(key, move |inner, sftp| {
            let mut files = RemoteFiles { inner, sftp };
            partial::write_part(&mut files, &key_owned, &upload, &part, true)
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
        self.blocking(key, move |inner, sftp| {
            partial::complete(
                &mut RemoteFiles { inner, sftp },
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
        self.blocking(key, move |inner, sftp| {
            partial::abort(&mut RemoteFiles { inner, sftp }, &key_owned, &upload)
        })
        .await
    }

    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        validate_key(key)?;
        Ok(Readiness::Ready)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let key_owned = key.to_string();
        // The stream owns its connection (not pooled): it lives as long as the reader.
        let inner = self.inner.clone();
        let reader = on_blocking_pool(&self.inner.name, key, move || {
            let path = inner.path_of(&key_owned)?;
            let conn = inner.connect()?;
            let mut f = conn.sftp.open(Path::new(&path)).map_err(|e| {
                if is_sftp(&e, &[FX_NO_SUCH_FILE, FX_NO_SUCH_PATH]) {
                    Error::new(ErrorKind::NotFound, format!("{path} does not exist"))
                } else {
                    ssh_error(format!("cannot open {path}"), e)
                }
            })?;
            let size = f
                .stat()
                .map_err(|e| ssh_error(format!("cannot stat {path}"), e))?
                .size
                .unwrap_or(0);
            let (start, end) = clamp_range(range, size);
            f.seek(SeekFrom::Start(start))
                .map_err(|e| io_error(format!("cannot seek {path}"), e))?;
            Ok(ConnReader {
                file: f.take(end.saturating_sub(start)),
                _conn: conn,
            })
        })
        .await?;
        Ok(blocking_stream(
            reader,
            self.inner.name.clone(),
            key.to_string(),
        ))
    }

    async fn list(&self, prefix: &str) -> Result<ListStream> {
        let prefix_owned = prefix.to_string();
        let items = self
            .blocking(prefix, move |inner, sftp| {
                inner.check_root(sftp)?;
                let dir_part = folder_of(&prefix_owned)?;
                let mut out = Vec::new();
                walk(inner, sftp, dir_part, &prefix_owned, &mut out)?;
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            })
            .await?;
        Ok(Box::pin(futures::stream::iter(items.into_iter().map(Ok))))
    }

    async fn list_leftovers(&self, prefix: &str) -> Result<Vec<crate::Leftover>> {
        let prefix_owned = prefix.to_string();
        self.blocking(prefix, move |inner, sftp| {
            let dir = folder_of(&prefix_owned)?;
            let mut out = Vec::new();
            walk_for(
                inner,
                sftp,
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
        self.blocking(key, move |inner, sftp| {
            let path = inner.path_of(&key_owned)?;
            match sftp.unlink(Path::new(&path)) {
                Ok(()) => {}
                Err(e) if is_sftp(&e, &[FX_NO_SUCH_FILE, FX_NO_SUCH_PATH]) => return Ok(()),
                Err(e) => return Err(ssh_error(format!("cannot delete {path}"), e)),
            }
            // Tidy folders left empty, never the root; a folder still in use stays.
            let parts: Vec<&str> = key_owned.split('/').collect();
            for depth in (1..parts.len()).rev() {
                let dir = inner.path_of(&parts[..depth].join("/"))?;
                if sftp.rmdir(Path::new(&dir)).is_err() {
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
    file: std::io::Take<ssh2::File>,
    _conn: Conn,
}

impl Read for ConnReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

fn walk(
    inner: &Inner,
    sftp: &Sftp,
    dir: &str,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> Result<()> {
    walk_for(inner, sftp, dir, prefix, &mut Found::Objects(out))
}

/// Lists the files under `dir` (a key folder, "" for the root) whose keys
/// start with `prefix` into `out`.
fn walk_for(inner: &Inner, sftp: &Sftp, dir: &str, prefix: &str, out: &mut Found) -> Result<()> {
    let path = inner.path_of(dir)?;
    let entries = match sftp.readdir(Path::new(&path)) {
        Ok(e) => e,
        Err(e) if is_sftp(&e, &[FX_NO_SUCH_FILE, FX_NO_SUCH_PATH, FX_FAILURE]) => return Ok(()),
        Err(e) => return Err(ssh_error(format!("cannot list {path}"), e)),
    };
    for (p, st) in entries {
        let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let rel = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        if st.is_dir() {
            if enters(&rel, prefix) {
                walk_for(inner, sftp, &rel, prefix, out)?;
            }
        } else if st.is_file() && rel.starts_with(prefix) {
            out.file(&name, rel, st.size.unwrap_or(0), || {
                st.mtime
                    .map(|t| std::time::UNIX_EPOCH + Duration::from_secs(t))
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

    #[test]
    fn the_password_never_shows_in_debug() {
        let text = format!("{:?}", backend("/x"));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
