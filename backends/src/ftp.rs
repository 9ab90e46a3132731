//! `kind = "ftp"`: a folder on an FTP or FTPS server, on `suppaftp` (sync,
//! over rustls: no OpenSSL).
//!
//! Guarantees:
//! - **TLS** (`tls = "explicit"`: AUTH TLS, PBSZ 0, PROT P; `"implicit"`:
//!   TLS from the first byte, usually port 990) verifies the server's
//!   certificate against `ca_file` when given (a private CA, or a
//!   self-signed certificate that is not itself marked as a CA), else
//!   against the Mozilla roots (webpki-roots); or, with `fingerprint`, it
//!   trusts exactly the certificate whose SHA-256 is pinned (a small
//!   server's self-signed one, which rustls otherwise refuses as a CA used
//!   as an end entity), as SFTP pins a host key. A refused certificate's
//!   error prints its fingerprint. There is no "accept any certificate"
//!   switch. Data connections are protected too.
//! - TLS session reuse: ProFTPD and vsftpd (as shipped) accept a data
//!   connection only when it resumes the control connection's TLS session.
//!   rustls resumes TLS 1.3 with tickets it uses once, and ProFTPD hands out
//!   two per control connection, so the third data connection would be
//!   refused (425). FTPS therefore speaks TLS 1.2, whose session resumes
//!   any number of times; each control connection keeps its own session
//!   cache, so a data connection never offers another one's session.
//! - Binary transfers (TYPE I) only; passive mode, using the control
//!   connection's address when the server announces another (NAT).
//! - The root folder (`path`) must exist: the session changes into it
//!   once, and every key is a path below it. Missing folders below are
//!   created.
//! - Uploads grow a hidden partial file (`.<name>.<upload>.partial`) one part
//!   after the other (`parts_out_of_order = false`). Each part is sent with
//!   `REST <offset>` + STOR after SIZE has shown that every earlier byte is
//!   there; a partial file shorter than the journal says restarts the
//!   volume. Completion renames into place (RNFR/RNTO) and checks the final
//!   size. FTP has no fsync: a part counts as stored once the server
//!   confirms the transfer (226).
//! - A server that refuses to resume a transfer (ProFTPD as Debian ships
//!   it: `AllowStoreRestart` off; or `resume = false`) is found at the
//!   first part past offset 0; from then on [`Backend::capabilities`] says
//!   `multipart: false` and volumes go whole with `put_file` (one STOR to a
//!   hidden name, then the rename; no resume).
//! - Nothing is overwritten, as far as FTP allows: RNTO replaces an
//!   existing file on every server tried, so the final name is checked
//!   (SIZE) just before; two writers within that moment could both pass.
//! - `list` uses MLSD where the server announces it (FEAT `MLST`) and LIST
//!   where it does not (vsftpd); `.` and `..` are skipped.
//! - FTP answers 550 both for "no such file" and "not allowed": where it
//!   matters (delete, read), the backend asks SIZE to tell them apart.
//!
//! Each call runs on tokio's blocking pool on a connection from a small
//! pool; a connection that failed is dropped. Reads use their own
//! connection, closed when the stream ends.

mod settings;

pub use settings::FtpSettings;

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use suppaftp::list::File as ListEntry;
use suppaftp::types::FileType;
use suppaftp::{FtpError, RustlsConnector, RustlsFtpStream, Status};

use crate::files::{
    Found, Pool, blocking_stream, clamp_range, enters, file_tree_capabilities, folder_of,
    on_blocking_pool, unique_id,
};
use crate::partial::{self, FileOps};
use crate::{
    Backend, ByteStream, Capabilities, Error, ErrorKind, FileBody, ListStream, ObjectMeta, Part,
    PartReceipt, Readiness, Result, Secret, UploadId, validate_key,
};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtpTls {
    /// Plain FTP: the password and the data cross the network in clear.
    None,
    /// FTPS with `AUTH TLS` on the usual port before logging in.
    Explicit,
    /// FTPS with TLS from the first byte (usually port 990).
    Implicit,
}

/// Where the password comes from.
#[derive(Clone)]
pub enum FtpPassword {
    /// Read from this environment variable when connecting.
    Env(String),
    /// Given directly (tests and embedders).
    Value(Secret),
}

impl fmt::Debug for FtpPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FtpPassword::Env(v) => f.debug_tuple("Env").field(v).finish(),
            FtpPassword::Value(_) => f.write_str("Value(***)"),
        }
    }
}

/// An FTP destination's settings.
#[derive(Debug, Clone)]
pub struct FtpOptions {
    /// The server's host name or address.
    pub host: String,
    /// The control connection's port.
    pub port: u16,
    /// The login user.
    pub user: String,
    /// The login password.
    pub password: FtpPassword,
    /// The root folder on the server (absolute, or relative to the login folder).
    pub root: String,
    /// How the connection is protected.
    pub tls: FtpTls,
    /// PEM certificates to trust instead of the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of the server's own certificate (DER), pinned: that
    /// certificate is trusted whoever signed it (a small server's
    /// self-signed one), any other refused. Instead of `ca_file`.
    pub fingerprint: Option<[u8; 32]>,
    /// Connect and per-read/write timeout.
    pub timeout: Duration,
    /// List with LIST even where the server has MLSD (to test the fallback).
    pub force_list: bool,
    /// Resume uploads part by part (REST + STOR). False for a server known
    /// to refuse it: volumes then go whole from the start. Where it is true
    /// and the server refuses, the backend finds out and goes whole anyway.
    pub resume: bool,
}

/// Idle connections kept for reuse.
const POOL_SIZE: usize = 2;
const WRITE_SLICE: usize = 1 << 20;

struct Conn {
    ftp: RustlsFtpStream,
    mlsd: bool,
    /// The root's absolute path on the server (PWD after entering it).
    /// Every command names an absolute path, so nothing depends on the
    /// session's current folder.
    base: String,
}

impl Conn {
    /// The absolute server path of `rel` (a key or key folder; "" for the root).
    fn abs(&self, rel: &str) -> String {
        match (rel.is_empty(), self.base.ends_with('/')) {
            (true, _) => self.base.clone(),
            (false, true) => format!("{}{rel}", self.base),
            (false, false) => format!("{}/{rel}", self.base),
        }
    }
}

/// An FTP or FTPS destination: a folder on the server, reached through a
/// small pool of blocking connections.
#[derive(Clone)]
pub struct FtpBackend {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    options: FtpOptions,
    pool: Pool<Conn>,
    /// The server refused to resume a transfer (REST before STOR, or
    /// APPE): uploads go whole from then on (`multipart` is false).
    no_restart: AtomicBool,
    /// The SHA-256 of the last certificate the server presented that was
    /// not trusted, for the error to show.
    refused_certificate: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for FtpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpBackend")
            .field("name", &self.inner.name)
            .field("options", &self.inner.options)
            .finish()
    }
}

/// The reply code of an FTP error, if the server answered.
fn code(e: &FtpError) -> Option<u32> {
    match e {
        FtpError::UnexpectedResponse(r) => Some(r.status.code()),
        _ => None,
    }
}

fn reply_text(e: &FtpError) -> String {
    match e {
        FtpError::UnexpectedResponse(r) => format!(
            "{} {}",
            r.status.code(),
            String::from_utf8_lossy(&r.body).trim()
        ),
        other => other.to_string(),
    }
}

const UNTRUSTED_HINT: &str = "the server's certificate is not trusted: set ca_file to the CA that signed it (or to the server's own self-signed certificate); offsite never accepts an unverified certificate";

/// `AB:CD:...`: a SHA-256 as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint_text(sha: &[u8]) -> String {
    sha.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a pinned fingerprint: `sha256:` then 32 bytes in hex, with or
/// without colons.
pub fn parse_fingerprint(text: &str) -> std::result::Result<[u8; 32], String> {
    let hex: String = text
        .trim()
        .strip_prefix("sha256:")
        .or_else(|| text.trim().strip_prefix("SHA256:"))
        .unwrap_or(text.trim())
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return Err(format!(
            "a SHA-256 fingerprint is 32 bytes (64 hex digits), this has {} digits",
            hex.len()
        ));
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{:?} is not hex", &hex[2 * i..2 * i + 2]))?;
    }
    Ok(out)
}

/// Checks the server's certificate: against the pinned fingerprint when one
/// is set (then nothing else about the certificate matters: a small
/// server's self-signed, CA-flagged, expired certificate is what the
/// operator pinned), else the roots' usual way. A refused certificate's
/// fingerprint is kept for the error. The handshake's signatures are
/// always checked.
#[derive(Debug)]
struct CertificateCheck {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    refused: Arc<Mutex<Option<String>>>,
}

impl rustls::client::danger::ServerCertVerifier for CertificateCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let sha: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        let verdict = match self.pinned {
            Some(pin) if pin == sha => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            None => self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        };
        if verdict.is_err()
            && let Ok(mut r) = self.refused.lock()
        {
            *r = Some(fingerprint_text(&sha));
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether rustls refused the server's certificate (it reports that as an I/O error).
fn untrusted_certificate(io: &std::io::Error) -> bool {
    match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => true,
        Some(_) => false,
        None => io.to_string().contains("invalid peer certificate"),
    }
}

/// Maps an FTP error; `what` says what was being done, to what.
fn ftp_error(what: impl Into<String>, e: FtpError) -> Error {
    let what = what.into();
    match e {
        FtpError::ConnectionError(io) if untrusted_certificate(&io) => Error::new(
            ErrorKind::ConfigInvalid,
            format!("{what}: TLS failed: {io}"),
        )
        .with_hint(UNTRUSTED_HINT),
        FtpError::ConnectionError(io) => Error::from_io(what, io).temporary(),
        FtpError::SecureError(s) => {
            let untrusted = s.contains("certificate") || s.contains("Certificate");
            let err = Error::new(ErrorKind::ConfigInvalid, format!("{what}: TLS failed: {s}"));
            if untrusted {
                err.with_hint(UNTRUSTED_HINT)
            } else {
                err
            }
        }
        ref other => {
            let message = format!("{what}: {}", reply_text(other));
            let (kind, temporary, hint) = match code(other) {
                Some(530) => (
                    ErrorKind::Unauthenticated,
                    false,
                    Some(
                        "check the user name and the password (the password itself is never printed)",
                    ),
                ),
                // 550 is "not available": a missing file, or one the user
                // may not touch, which only the text tells apart.
                Some(550) if says_no_permission(&reply_text(other)) => (
                    ErrorKind::PermissionDenied,
                    false,
                    Some("check the FTP user's permissions on that folder"),
                ),
                Some(550) => (ErrorKind::NotFound, false, None),
                Some(553) => (
                    ErrorKind::PermissionDenied,
                    false,
                    Some("the server refuses that file name there"),
                ),
                Some(452 | 552) => (
                    ErrorKind::Unexpected,
                    false,
                    Some("the server's disk or quota is full: free space there"),
                ),
                Some(421 | 425 | 426 | 450 | 451) => (ErrorKind::Unexpected, true, None),
                Some(502 | 504) => (ErrorKind::Unsupported, false, None),
                None => (ErrorKind::Unexpected, true, None),
                Some(_) => (ErrorKind::Unexpected, false, None),
            };
            let mut err = Error::new(kind, message);
            if temporary {
                err = err.temporary();
            }
            match hint {
                Some(h) => err.with_hint(h),
                None => err,
            }
        }
    }
}

/// The error for a server that refuses to resume a transfer (REST before
/// STOR): `Unsupported`, which makes the backend send whole files.
fn refused_restart(e: &FtpError) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "the server refuses to resume a transfer ({})",
            reply_text(e)
        ),
    )
    .with_hint(
        "each volume is sent whole from now on, without resume (on ProFTPD, `AllowStoreRestart on` lets offsite resume)",
    )
}

/// Whether a 550 reply's text says the user may not (pyftpdlib: "Not
/// enough privileges", ProFTPD and pure-ftpd: "Permission denied").
fn says_no_permission(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "permission",
        "privilege",
        "denied",
        "not allowed",
        "not permitted",
    ]
    .iter()
    .any(|w| text.contains(w))
}

fn is_550(e: &FtpError) -> bool {
    code(e) == Some(550)
}

impl FtpBackend {
    /// A backend named `name` (the destination's name); it connects at its
    /// first call.
    pub fn new(name: impl Into<String>, options: FtpOptions) -> FtpBackend {
        let resume = options.resume;
        FtpBackend {
            inner: Arc::new(Inner {
                name: name.into(),
                options,
                pool: Pool::new(POOL_SIZE),
                no_restart: AtomicBool::new(!resume),
                refused_certificate: Arc::new(Mutex::new(None)),
            }),
        }
    }

    async fn blocking<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut Conn) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        on_blocking_pool(&self.inner.name, key, move || {
            inner.pool.with(
                || inner.connect(),
                // The server may have closed an idle connection.
                |c| c.ftp.noop().is_ok(),
                |conn| f(&inner, conn),
            )
        })
        .await
    }
}

impl Inner {
    fn endpoint(&self) -> String {
        format!(
            "{}@{}:{}",
            self.options.user, self.options.host, self.options.port
        )
    }

    fn tls_connector(&self) -> Result<RustlsConnector> {
        let o = &self.options;
        let mut roots = rustls::RootCertStore::empty();
        match &o.ca_file {
            Some(file) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                    .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::ConfigInvalid,
                            format!(
                                "cannot read certificates from ca_file {}: {e}",
                                file.display()
                            ),
                        )
                        .with_hint(
                            "ca_file must hold PEM certificates (-----BEGIN CERTIFICATE-----)",
                        )
                    })?;
                if certs.is_empty() {
                    return Err(Error::new(
                        ErrorKind::ConfigInvalid,
                        format!("ca_file {} holds no certificate", file.display()),
                    ));
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        Error::new(
                            ErrorKind::ConfigInvalid,
                            format!("ca_file {}: unusable certificate: {e}", file.display()),
                        )
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let setup = |e: rustls::Error| Error::new(ErrorKind::Unexpected, format!("TLS setup: {e}"));
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::new(ErrorKind::ConfigInvalid, format!("TLS setup: {e}")))?;
        let verifier = Arc::new(CertificateCheck {
            webpki,
            pinned: o.fingerprint,
            provider: provider.clone(),
            refused: self.refused_certificate.clone(),
        });
        // TLS 1.2: see the module documentation (session reuse).
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .map_err(setup)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(RustlsConnector::from(Arc::new(config)))
    }

    /// `e`, with the refused certificate's fingerprint in its hint when
    /// the TLS handshake refused the server's certificate.
    fn certificate_hint(&self, e: Error) -> Error {
        if e.hint() == Some(UNTRUSTED_HINT) {
            let hint = self.untrusted_hint();
            e.with_hint(hint)
        } else {
            e
        }
    }

    /// The hint for a refused certificate: its fingerprint, and how to pin it.
    fn untrusted_hint(&self) -> String {
        match self.refused_certificate.lock().ok().and_then(|g| g.clone()) {
            Some(fp) => format!(
                "the server presented a certificate with SHA-256 fingerprint {fp}; if that is your server's own (compare with `openssl x509 -noout -fingerprint -sha256 -in CERT` on the server), pin it with fingerprint = \"sha256:{fp}\", or set ca_file to the CA that signed it; offsite never accepts an unverified certificate"
            ),
            None => UNTRUSTED_HINT.to_string(),
        }
    }

    fn connect(&self) -> Result<Conn> {
        let o = &self.options;
        let at = format!("{}:{}", o.host, o.port);
        let addr: SocketAddr = (o.host.as_str(), o.port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::from_io(format!("cannot resolve {}", o.host), e)
                    .temporary()
                    .with_hint("check `host`, and the DNS of this machine")
            })?
            .next()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("{} has no address", o.host),
                )
            })?;
        let timeout = o.timeout;
        let unreachable = |e: std::io::Error| {
            Error::from_io(format!("cannot connect to {at}"), e)
                .temporary()
                .with_hint("check `host` and `port`, and that the FTP server runs and is reachable")
        };
        let mut ftp = match o.tls {
            FtpTls::Implicit => {
                // suppaftp connects and greets without a timeout here; every
                // read and write after that has one.
                let ftp =
                    RustlsFtpStream::connect_secure_implicit(addr, self.tls_connector()?, &o.host)
                        .map_err(|e| {
                            self.certificate_hint(ftp_error(
                                format!("cannot connect to {at} (implicit TLS)"),
                                e,
                            ))
                        })?;
                {
                    let socket = ftp.get_ref();
                    socket
                        .set_read_timeout(Some(timeout))
                        .map_err(unreachable)?;
                    socket
                        .set_write_timeout(Some(timeout))
                        .map_err(unreachable)?;
                }
                ftp
            }
            FtpTls::None | FtpTls::Explicit => {
                let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
                tcp.set_read_timeout(Some(timeout)).map_err(unreachable)?;
                tcp.set_write_timeout(Some(timeout)).map_err(unreachable)?;
                let ftp = RustlsFtpStream::connect_with_stream(tcp)
                    .map_err(|e| ftp_error(format!("no FTP greeting from {at}"), e))?;
                if o.tls == FtpTls::Explicit {
                    ftp.into_secure(self.tls_connector()?, &o.host)
                        .map_err(|e| {
                            self.certificate_hint(ftp_error(format!("AUTH TLS with {at}"), e))
                        })?
                } else {
                    ftp
                }
            }
        };
        ftp = ftp.passive_stream_builder(move |addr| {
            let s =
                TcpStream::connect_timeout(&addr, timeout).map_err(FtpError::ConnectionError)?;
            s.set_read_timeout(Some(timeout))
                .map_err(FtpError::ConnectionError)?;
            s.set_write_timeout(Some(timeout))
                .map_err(FtpError::ConnectionError)?;
            Ok(s)
        });
        ftp.set_passive_nat_workaround(true);
        if o.tls == FtpTls::Implicit {
            // suppaftp's implicit connect negotiates no data protection; ask
            // for TLS on data connections as AUTH TLS does (RFC 4217).
            for command in ["PBSZ 0", "PROT P"] {
                ftp.custom_command(command, &[Status::CommandOk])
                    .map_err(|e| ftp_error(format!("{command} on {at}"), e))?;
            }
        }
        let password = match &o.password {
            FtpPassword::Value(s) => s.clone(),
            FtpPassword::Env(var) => crate::secret::from_env(var, "password_env")?,
        };
        ftp.login(o.user.as_str(), password.expose())
            .map_err(|e| ftp_error(format!("login as {}", self.endpoint()), e))?;
        ftp.transfer_type(FileType::Binary)
            .map_err(|e| ftp_error("TYPE I", e))?;
        if !o.root.is_empty() {
            ftp.cwd(&o.root).map_err(|e| {
                let err = ftp_error(format!("cannot enter {} on {}", o.root, self.endpoint()), e);
                if err.kind() == ErrorKind::NotFound {
                    Error::new(ErrorKind::ConfigInvalid, err.to_string()).with_hint(
                        "create the folder on the server (offsite creates folders below `path`, never `path` itself)",
                    )
                } else {
                    err
                }
            })?;
        }
        let base = ftp
            .pwd()
            .map_err(|e| ftp_error(format!("PWD on {}", self.endpoint()), e))?;
        let mlsd = !o.force_list
            && ftp
                .feat()
                .map(|f| f.keys().any(|k| k.eq_ignore_ascii_case("MLST")))
                .unwrap_or(false);
        Ok(Conn { ftp, mlsd, base })
    }

    /// `e`, from storing a part at an offset: when the server refuses to
    /// resume (ProFTPD as shipped: `451 ...: Append/Restart not permitted`;
    /// others: REST not implemented), the backend goes over to whole files
    /// ([`Backend::capabilities`] says so from now on) and the error is
    /// `Unsupported` for the caller to send the volume whole.
    fn restart_refused(&self, e: Error) -> Error {
        if e.kind() == ErrorKind::Unsupported {
            self.no_restart.store(true, Ordering::Relaxed);
        }
        e
    }

    /// Stores `file` whole as `path` in one STOR, streamed, paced by its
    /// limiter (on the blocking pool: `rt` runs the pacing).
    fn store_file(
        conn: &mut Conn,
        path: &str,
        file: &FileBody,
        rt: &tokio::runtime::Handle,
    ) -> Result<()> {
        let mut f = std::fs::File::open(&file.path).map_err(|e| {
            Error::from_io(format!("cannot open staged {}", file.path.display()), e)
        })?;
        let abs = conn.abs(path);
        let mut stream = conn
            .ftp
            .put_with_stream(&abs)
            .map_err(|e| ftp_error(format!("STOR {path}"), e))?;
        let mut buf = vec![0u8; WRITE_SLICE];
        let mut sent = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| {
                Error::from_io(format!("cannot read staged {}", file.path.display()), e)
            })?;
            if n == 0 {
                break;
            }
            rt.block_on(file.pace(n as u64));
            stream
                .write_all(&buf[..n])
                .map_err(|e| Error::from_io(format!("cannot send {path}"), e).temporary())?;
            sent += n as u64;
        }
        stream
            .finish()
            .map_err(|e| ftp_error(format!("STOR {path} did not complete"), e))?;
        if sent != file.size {
            return Err(Error::new(
                ErrorKind::Precondition,
                format!(
                    "staged {} is {sent} bytes, not {}: it changed after staging; stage the backup again",
                    file.path.display(),
                    file.size
                ),
            ));
        }
        Ok(())
    }

    /// Creates the folders of `key` below the root.
    fn make_dirs(conn: &mut Conn, key: &str) -> Result<()> {
        let parts: Vec<&str> = key.split('/').collect();
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            let abs = conn.abs(&dir);
            if let Err(e) = conn.ftp.mkdir(&abs) {
                // 550/521 "exists" from most servers: fine if it is a folder now.
                if !is_dir(conn, &dir) {
                    return Err(ftp_error(format!("cannot create folder {dir}"), e));
                }
            }
        }
        Ok(())
    }

    /// SIZE of `path`; None when it does not exist (550).
    fn size(conn: &mut Conn, path: &str) -> Result<Option<u64>> {
        let abs = conn.abs(path);
        match conn.ftp.size(&abs) {
            Ok(n) => Ok(Some(n as u64)),
            Err(e) if is_550(&e) && !says_no_permission(&reply_text(&e)) => Ok(None),
            Err(e) => Err(ftp_error(format!("SIZE {path}"), e)),
        }
    }

    /// Stores `body` at `path` from `offset` (REST + STOR; plain STOR at 0).
    fn store_at(conn: &mut Conn, path: &str, offset: u64, body: &[u8]) -> Result<()> {
        if offset > 0 {
            let at = usize::try_from(offset).map_err(|_| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("offset {offset} is too large here"),
                )
            })?;
            conn.ftp.resume_transfer(at).map_err(|e| {
                if matches!(code(&e), Some(500 | 502 | 504)) {
                    refused_restart(&e)
                } else {
                    ftp_error(format!("REST {offset} for {path}"), e)
                }
            })?;
        }
        let abs = conn.abs(path);
        let mut stream = conn.ftp.put_with_stream(&abs).map_err(|e| {
            // ProFTPD as shipped: "451 <file>: Append/Restart not permitted, try again".
            let text = reply_text(&e);
            if offset > 0
                && code(&e) == Some(451)
                && (text.contains("Restart") || text.contains("Append"))
            {
                refused_restart(&e)
            } else {
                ftp_error(format!("STOR {path}"), e)
            }
        })?;
        for slice in body.chunks(WRITE_SLICE) {
            stream
                .write_all(slice)
                .map_err(|e| Error::from_io(format!("cannot send {path}"), e).temporary())?;
        }
        stream
            .finish()
            .map_err(|e| ftp_error(format!("STOR {path} did not complete"), e))
    }

    /// Moves `from` to `to` unless `to` exists. FTP has no rename that
    /// refuses an existing target (RNTO replaces it on ProFTPD, pure-ftpd and
    /// pyftpdlib alike), so this checks first: the best the protocol
    /// allows. Two writers renaming onto one name within the same moment
    /// can both pass the check; offsite's own keys never collide that way
    /// (each host's backup ids carry its host id).
    fn rename_into_place(conn: &mut Conn, from: &str, to: &str) -> Result<()> {
        if Self::size(conn, to)?.is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{to} already exists; it is never overwritten"),
            ));
        }
        let (from_abs, to_abs) = (conn.abs(from), conn.abs(to));
        conn.ftp
            .rename(&from_abs, &to_abs)
            .map_err(|e| ftp_error(format!("cannot rename {from} to {to}"), e))
    }
}

/// Whether `dir` (relative to the root) is a folder, by trying to enter it.
fn is_dir(conn: &mut Conn, dir: &str) -> bool {
    let abs = conn.abs(dir);
    conn.ftp.cwd(&abs).is_ok()
}

/// A file read over its own connection, closed when the reader is dropped.
struct FtpReader {
    // Field order is drop order: the transfer ends before its connection.
    data: Box<dyn Read + Send>,
    _conn: Conn,
}

impl Read for FtpReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.data.read(buf)
    }
}

/// The server's files below the root, for the partial-file protocol.
struct FtpFiles<'a> {
    inner: &'a Inner,
    conn: &'a mut Conn,
}

impl FileOps for FtpFiles<'_> {
    fn make_parents(&mut self, path: &str) -> Result<()> {
        Inner::make_dirs(self.conn, path)
    }

    /// STOR replaces a file: the protocol has nothing better, and the
    /// callers' names are fresh random ones.
    fn write_new(&mut self, path: &str, body: &[u8]) -> Result<()> {
        Inner::store_at(self.conn, path, 0, body)
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>> {
        Inner::size(self.conn, path)
    }

    /// REST + STOR, then SIZE: a server that ignored REST would have
    /// rewritten the file from 0.
    fn write_at(&mut self, path: &str, offset: u64, body: &[u8]) -> Result<()> {
        if let Err(e) = Inner::store_at(self.conn, path, offset, body) {
            return Err(self.inner.restart_refused(e));
        }
        let end = offset + body.len() as u64;
        match Inner::size(self.conn, path)? {
            Some(n) if n >= end => Ok(()),
            // Like a refused REST: the backend goes over to whole files.
            other => Err(self.inner.restart_refused(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{path} is {} bytes after writing {offset}..{end}: the server does not honour REST before STOR, so files go whole",
                    other.map_or("missing".to_string(), |n| n.to_string()),
                ),
            ))),
        }
    }

    /// FTP cannot cut a file: a partial file longer than its parts (left
    /// by an attempt that wrote more) is sent again from its first part.
    fn truncate(&mut self, path: &str, len: u64) -> Result<()> {
        Err(partial::damaged(
            path,
            &format!("holds more bytes than the parts say ({len}), and FTP cannot cut a file"),
        ))
    }

    /// The file is made the owner's only first (`SITE CHMOD 600`, which
    /// pyftpdlib, pure-ftpd and ProFTPD take), so it never lies under its
    /// name readable by others; a server without SITE CHMOD keeps its umask.
    fn rename_new(&mut self, from: &str, to: &str) -> Result<()> {
        let abs = self.conn.abs(from);
        let _ = self.conn.ftp.site(format!("CHMOD 600 {abs}"));
        Inner::rename_into_place(self.conn, from, to)
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        let abs = self.conn.abs(path);
        match self.conn.ftp.rm(&abs) {
            Ok(()) => Ok(()),
            Err(e) if is_550(&e) && Inner::size(self.conn, path)?.is_none() => Ok(()),
            Err(e) => Err(ftp_error(format!("cannot remove {path}"), e)),
        }
    }
}

#[async_trait]
impl Backend for FtpBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = file_tree_capabilities(false);
        // The name is checked with SIZE before RNTO: a racing writer can
        // slip between the two.
        caps.exclusive_create = false;
        if self.inner.no_restart.load(Ordering::Relaxed) {
            // The server refused REST/APPE: whole files with `put_file`.
            caps.multipart = false;
            caps.offset_resume = false;
        }
        caps
    }

    async fn probe(&self) -> Result<()> {
        self.blocking("", |_, conn| {
            conn.ftp.noop().map_err(|e| ftp_error("NOOP", e))
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let key_owned = key.to_string();
        self.blocking(key, move |inner, conn| {
            partial::put(&mut FtpFiles { inner, conn }, &key_owned, &body)
        })
        .await
    }

    /// For a server that refuses to resume a transfer: the staged file in
    /// one STOR to a hidden name, then moved into place (create-only, as
    /// `complete_upload`).
    async fn put_file(&self, key: &str, file: FileBody) -> Result<()> {
        if !self.inner.no_restart.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this server resumes transfers: files go in parts (create_upload)",
            )
            .with_destination(&self.inner.name)
            .with_key(key));
        }
        let key_owned = key.to_string();
        let rt = tokio::runtime::Handle::current();
        self.blocking(key, move |inner, conn| {
            Inner::make_dirs(conn, &key_owned)?;
            let hidden = partial::partial_key(&key_owned, &UploadId(unique_id()))?;
            if let Err(e) = Inner::store_file(conn, &hidden, &file, &rt) {
                let abs = conn.abs(&hidden);
                let _ = conn.ftp.rm(&abs);
                return Err(e);
            }
            partial::place(
                &mut FtpFiles { inner, conn },
                &hidden,
                &key_owned,
                file.size,
            )
        })
        .await
    }

    async fn create_upload(&self, key: &str, _part_size: u64) -> Result<UploadId> {
        if self.inner.no_restart.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this server does not resume transfers, so files go whole (put_file)",
            )
            .with_destination(&self.inner.name)
            .with_key(key));
        }
        let key_owned = key.to_string();
        self.blocking(key, move |inner, conn| {
            partial::create(&mut FtpFiles { inner, conn }, &key_owned)
        })
        .await
    }

    async fn put_part(&self, key: &str, upload: &UploadId, part: Part) -> Result<PartReceipt> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        self.blocking(key, move |inner, conn| {
            let mut files = FtpFiles { inner, conn };
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
        self.blocking(key, move |inner, conn| {
            partial::complete(&mut FtpFiles { inner, conn }, &key_owned, &upload, &parts)
        })
        .await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<()> {
        let key_owned = key.to_string();
        let upload = upload.clone();
        self.blocking(key, move |inner, conn| {
            partial::abort(&mut FtpFiles { inner, conn }, &key_owned, &upload)
        })
        .await
    }

    async fn prepare_read(&self, key: &str) -> Result<Readiness> {
        validate_key(key)?;
        Ok(Readiness::Ready)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        validate_key(key)?;
        let key_owned = key.to_string();
        let inner = self.inner.clone();
        let reader = on_blocking_pool(&self.inner.name, key, move || {
            let mut conn = inner.connect()?;
            let Some(size) = Inner::size(&mut conn, &key_owned)? else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{key_owned} does not exist"),
                ));
            };
            let (start, end) = clamp_range(range, size);
            if start > 0 {
                let at = usize::try_from(start).map_err(|_| {
                    Error::new(
                        ErrorKind::Unsupported,
                        format!("offset {start} is too large here"),
                    )
                })?;
                conn.ftp
                    .resume_transfer(at)
                    .map_err(|e| ftp_error(format!("REST {start} for {key_owned}"), e))?;
            }
            let abs = conn.abs(&key_owned);
            let data = conn
                .ftp
                .retr_as_stream(&abs)
                .map_err(|e| ftp_error(format!("RETR {key_owned}"), e))?;
            Ok(FtpReader {
                data: Box::new(data.take(end.saturating_sub(start))),
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
            .blocking(prefix, move |_, conn| {
                let dir = folder_of(&prefix_owned)?;
                let mut out = Vec::new();
                walk(conn, dir, &prefix_owned, &mut out)?;
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            })
            .await?;
        Ok(Box::pin(futures::stream::iter(items.into_iter().map(Ok))))
    }

    async fn list_leftovers(&self, prefix: &str) -> Result<Vec<crate::Leftover>> {
        let prefix_owned = prefix.to_string();
        self.blocking(prefix, move |_, conn| {
            let dir = folder_of(&prefix_owned)?;
            let mut out = Vec::new();
            walk_for(conn, dir, &prefix_owned, &mut Found::Leftovers(&mut out))?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key_owned = key.to_string();
        self.blocking(key, move |_, conn| {
            validate_key(&key_owned)?;
            let abs = conn.abs(&key_owned);
            match conn.ftp.rm(&abs) {
                Ok(()) => {}
                // 550: gone already (fine), or not allowed (which SIZE tells apart).
                Err(e) if is_550(&e) && Inner::size(conn, &key_owned)?.is_none() => return Ok(()),
                Err(e) => {
                    let err = ftp_error(format!("cannot delete {key_owned}"), e);
                    return Err(if err.kind() == ErrorKind::NotFound {
                        Error::new(ErrorKind::PermissionDenied, err.to_string())
                            .with_hint("check the FTP user's permissions on that folder")
                    } else {
                        err
                    });
                }
            }
            // Tidy folders left empty, never the root; a folder still in use stays.
            let parts: Vec<&str> = key_owned.split('/').collect();
            for depth in (1..parts.len()).rev() {
                let dir = conn.abs(&parts[..depth].join("/"));
                if conn.ftp.rmdir(&dir).is_err() {
                    break;
                }
            }
            Ok(())
        })
        .await
    }
}

/// LIST of `dir` (relative to the root), from inside it: LIST takes
/// `ls`-style arguments, so a name with spaces would split.
fn list_inside(conn: &mut Conn, dir: &str) -> std::result::Result<Vec<String>, FtpError> {
    let abs = conn.abs(dir);
    conn.ftp.cwd(&abs)?;
    conn.ftp.list(None)
}

fn walk(conn: &mut Conn, dir: &str, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
    walk_for(conn, dir, prefix, &mut Found::Objects(out))
}

/// Lists the files under `dir` (relative to the root; "" for the root)
/// whose keys start with `prefix` into `out`. LIST (servers without MLSD)
/// hides names starting with a dot on most servers: there, leftovers are
/// not found.
fn walk_for(conn: &mut Conn, dir: &str, prefix: &str, out: &mut Found) -> Result<()> {
    let shown = if dir.is_empty() { "." } else { dir };
    let lines = if conn.mlsd {
        let abs = conn.abs(dir);
        conn.ftp.mlsd(Some(&abs))
    } else {
        list_inside(conn, dir)
    };
    let lines = match lines {
        Ok(l) => l,
        // 550 from most servers, 501 from pyftpdlib: a folder that is not there lists nothing.
        Err(e) if !dir.is_empty() && !is_dir(conn, dir) => {
            let _ = e;
            return Ok(());
        }
        Err(e) => return Err(ftp_error(format!("cannot list {shown}"), e)),
    };
    for line in lines {
        let Ok(entry) = ListEntry::try_from(line.as_str()) else {
            continue;
        };
        let name = entry.name().rsplit('/').next().unwrap_or("").to_string();
        if name.is_empty() || name == "." || name == ".." {
            continue;
        }
        let rel = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        if entry.is_directory() {
            if enters(&rel, prefix) {
                walk_for(conn, &rel, prefix, out)?;
            }
        } else if entry.is_file() && rel.starts_with(prefix) {
            out.file(&name, rel, entry.size() as u64, || Some(entry.modified()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_550_is_told_apart_by_its_text() {
        for text in [
            "550 Not enough privileges.",
            "550 x: Permission denied",
            "550 Can't create directory: Permission denied",
            "550 x: Operation not permitted",
        ] {
            assert!(says_no_permission(text), "{text}");
        }
        for text in ["550 No such file or directory.", "550 x: not a plain file"] {
            assert!(!says_no_permission(text), "{text}");
        }
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let b = FtpBackend::new(
            "ftp",
            FtpOptions {
                host: "h".into(),
                port: 21,
                user: "u".into(),
                password: FtpPassword::Value(Secret::new("hunter2-do-not-print")),
                root: "/".into(),
                tls: FtpTls::Explicit,
                ca_file: None,
                fingerprint: None,
                timeout: Duration::from_secs(5),
                force_list: false,
                resume: true,
            },
        );
        let text = format!("{b:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
