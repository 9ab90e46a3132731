//! Client-side encryption in the age format (<https://age-encryption.org>),
//! so a database host with put-only credentials cannot read what it shipped.
//!
//! - **Volumes** are encrypted after compression, each as its own age file
//!   (`vol-000000.tar.zst.age`), streamed in age's 64 KiB chunks: nothing is
//!   buffered beyond a chunk. The manifest's hash (BLAKE3) and size are
//!   those of the ciphertext, so `verify` checks what is stored without any
//!   key.
//! - **The manifest is split.** What `list`, retention and `prune` need stays
//!   in clear: id, kind, created_at, parent, host, volume names, sizes and
//!   hashes, counts, the source folder's own mode, owner and time (`root`),
//!   and the source check's verdict (`degenerate`). The file list (names, sizes, hashes, owners), the deleted and
//!   changed paths and the source's description go into one age-encrypted
//!   JSON document in the manifest's `encryption.payload` (base64).
//! - **Keys**: public-key recipients (`age1…`, inline or in a file), or a
//!   passphrase from an environment variable (age's scrypt). The database
//!   host holds only recipients; the identity (the private key) lives on the
//!   restore host. Losing every identity makes every encrypted backup
//!   unreadable; nobody can recover it.
//!
//! The local copy of a staged manifest (the parent of the next incremental)
//! stays in clear on the database host, which holds the data anyway.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::SecretString;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::manifest::{FileEntry, Manifest};

/// The `encryption` table of a job, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// Public keys (`age1…`), checked when the configuration is read.
    pub recipients: Vec<String>,
    /// A file of public keys, one per line (`#` comments), read at each backup.
    pub recipients_file: Option<PathBuf>,
    /// Instead of recipients: the variable holding a passphrase (both ways).
    pub passphrase_env: Option<String>,
    /// Where a restore host keeps its identity (private key) file.
    pub identity_file: Option<PathBuf>,
}

/// The scheme written in a manifest's `encryption.scheme`.
pub const SCHEME: &str = "age";

/// The suffix of encrypted volumes.
pub const VOLUME_SUFFIX: &str = ".age";

/// The clear part of an encrypted manifest's `encryption` field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    scheme: String,
    /// `recipients` or `passphrase`: what opens it.
    mode: String,
    /// The age file (binary, base64) holding [`Hidden`] as JSON.
    payload: String,
}

/// What an encrypted manifest keeps out of sight.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hidden {
    files: Vec<FileEntry>,
    deleted: Vec<String>,
    changed: Vec<String>,
    source_description: String,
}

/// Checks one inline recipient (an X25519 public key, `age1…`).
pub fn check_recipient(r: &str) -> std::result::Result<(), String> {
    age::x25519::Recipient::from_str(r.trim())
        .map(|_| ())
        .map_err(|e| format!("invalid age recipient {r:?}: {e} (a public key looks like \"age1…\"; `offsite keygen` makes a pair)"))
}

/// What encrypts: the recipients, or the passphrase.
pub enum Key {
    /// Public keys: any of their identities opens the backup.
    Recipients(Vec<age::x25519::Recipient>),
    /// The passphrase from the job's `passphrase_env` variable (age's scrypt).
    Passphrase(SecretString),
}

impl Key {
    /// Reads the recipients (inline and from `recipients_file`) or the passphrase.
    pub fn for_backup(enc: &Encryption, job: &str) -> Result<Key> {
        if let Some(var) = &enc.passphrase_env {
            return passphrase(var, job).map(Key::Passphrase);
        }
        let mut out = Vec::new();
        for r in &enc.recipients {
            out.push(age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                Error::Usage(format!("job {job:?}: invalid age recipient {r:?}: {e}"))
            })?);
        }
        if let Some(file) = &enc.recipients_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::io(
                    format!(
                        "job {job:?}: cannot read the recipients file {}",
                        file.display()
                    ),
                    e,
                )
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                out.push(age::x25519::Recipient::from_str(line).map_err(|e| {
                    Error::Usage(format!(
                        "job {job:?}: {}:{}: invalid age recipient: {e}",
                        file.display(),
                        n + 1
                    ))
                })?);
            }
        }
        if out.is_empty() {
            return Err(Error::Usage(format!(
                "job {job:?}: encryption has no recipient (recipients and recipients_file are empty); nothing would be able to restore"
            )));
        }
        Ok(Key::Recipients(out))
    }

    fn encryptor(&self) -> Result<age::Encryptor> {
        match self {
            Key::Passphrase(p) => Ok(age::Encryptor::with_user_passphrase(p.clone())),
            Key::Recipients(rs) => {
                age::Encryptor::with_recipients(rs.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| Error::Failed(format!("cannot set up encryption: {e}")))
            }
        }
    }

    fn mode(&self) -> &'static str {
        match self {
            Key::Passphrase(_) => "passphrase",
            Key::Recipients(_) => "recipients",
        }
    }

    /// Wraps `out` so what is written to it is encrypted; call
    /// [`age::stream::StreamWriter::finish`] at the end.
    pub fn wrap<W: Write>(&self, out: W) -> Result<age::stream::StreamWriter<W>> {
        self.encryptor()?
            .wrap_output(out)
            .map_err(|e| Error::io("cannot start an encrypted volume", e))
    }
}

fn passphrase(var: &str, job: &str) -> Result<SecretString> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ => Err(Error::Usage(format!(
            "job {job:?}: environment variable {var} (the encryption passphrase) is not set; set it for offsite (cron passes almost no environment: set it in the crontab or the service unit)"
        ))),
    }
}

/// Whether `m` was written encrypted.
pub fn is_encrypted(m: &Manifest) -> bool {
    m.encryption.is_some()
}

/// The manifest as it is shipped: the file list and every name moved into
/// the encrypted payload.
pub fn seal_manifest(plain: &Manifest, key: &Key) -> Result<Manifest> {
    let hidden = Hidden {
        files: plain.files.clone(),
        deleted: plain.deleted.clone(),
        changed: plain.changed.clone(),
        source_description: plain.source.description.clone(),
    };
    let json = serde_json::to_vec(&hidden)
        .map_err(|e| Error::Failed(format!("cannot encode the file list: {e}")))?;
    let mut cipher = Vec::new();
    let mut w = key.wrap(&mut cipher)?;
    w.write_all(&json)
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| Error::io("cannot encrypt the file list", e))?;
    let sealed = Sealed {
        scheme: SCHEME.into(),
        mode: key.mode().into(),
        payload: base64::engine::general_purpose::STANDARD.encode(&cipher),
    };
    let mut out = plain.clone();
    out.files = Vec::new();
    out.deleted = Vec::new();
    out.changed = Vec::new();
    out.source.description = "(encrypted)".into();
    out.encryption = Some(
        serde_json::to_value(&sealed)
            .map_err(|e| Error::Failed(format!("cannot encode the manifest: {e}")))?,
    );
    Ok(out)
}

/// What decrypts: the identities of an identity file, or a passphrase.
/// It keeps where they come from, not the parsed keys, so it can cross
/// threads; each use parses them again (a few microseconds).
pub struct Identities {
    source: IdSource,
    /// Where they came from, for messages.
    origin: String,
}

enum IdSource {
    File(PathBuf),
    Passphrase(SecretString),
    #[cfg(test)]
    X25519(SecretString),
}

impl Identities {
    /// From `--identity FILE`, else the job's `identity_file`, else its
    /// `passphrase_env`. None when nothing is configured.
    pub fn find(
        cli: Option<&Path>,
        enc: Option<&Encryption>,
        job: &str,
    ) -> Result<Option<Identities>> {
        let file = cli.or(enc.and_then(|e| e.identity_file.as_deref()));
        if let Some(f) = file {
            return Identities::from_file(f).map(Some);
        }
        if let Some(var) = enc.and_then(|e| e.passphrase_env.as_deref()) {
            return Ok(Some(Identities {
                source: IdSource::Passphrase(passphrase(var, job)?),
                origin: format!("the passphrase in {var}"),
            }));
        }
        Ok(None)
    }

    /// The identities in `path` (age's identity file format), checked now.
    pub fn from_file(path: &Path) -> Result<Identities> {
        let ids = Identities {
            source: IdSource::File(path.to_path_buf()),
            origin: format!("the identity file {}", path.display()),
        };
        ids.build()?;
        Ok(ids)
    }

    fn build(&self) -> Result<Vec<Box<dyn age::Identity>>> {
        match &self.source {
            IdSource::Passphrase(p) => Ok(vec![Box::new(age::scrypt::Identity::new(p.clone()))]),
            #[cfg(test)]
            IdSource::X25519(k) => {
                use age::secrecy::ExposeSecret;
                let id = age::x25519::Identity::from_str(k.expose_secret())
                    .map_err(|e| Error::Usage(e.to_string()))?;
                Ok(vec![Box::new(id)])
            }
            IdSource::File(path) => {
                let file =
                    age::IdentityFile::from_file(path.display().to_string()).map_err(|e| {
                        Error::Usage(format!(
                            "cannot read the identity file {}: {e}",
                            path.display()
                        ))
                    })?;
                let ids = file.into_identities().map_err(|e| {
                    Error::Usage(format!(
                        "the identity file {} holds no usable age identity: {e}",
                        path.display()
                    ))
                })?;
                if ids.is_empty() {
                    return Err(Error::Usage(format!(
                        "the identity file {} holds no identity (a line AGE-SECRET-KEY-1…)",
                        path.display()
                    )));
                }
                Ok(ids)
            }
        }
    }

    /// Wraps `input` (one age file) in a decrypting reader.
    pub fn decrypt<R: Read>(&self, input: R) -> Result<age::stream::StreamReader<R>> {
        let ids = self.build()?;
        let d = age::Decryptor::new(input).map_err(|e| self.refused(e))?;
        d.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| self.refused(e))
    }

    fn refused(&self, e: age::DecryptError) -> Error {
        match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                Error::Usage(format!(
                    "{} does not open this backup ({e}): it was encrypted to other recipients or with another passphrase",
                    self.origin
                ))
            }
            other => Error::Failed(format!("cannot decrypt with {}: {other}", self.origin)),
        }
    }
}

/// The manifest with its file list back, read with `ids`. A manifest
/// written without encryption comes back as it is.
pub fn open_manifest(m: &Manifest, ids: Option<&Identities>) -> Result<Manifest> {
    let Some(value) = &m.encryption else {
        return Ok(m.clone());
    };
    let sealed: Sealed = serde_json::from_value(value.clone()).map_err(|e| {
        Error::Failed(format!(
            "backup {}: its manifest's encryption field cannot be read: {e}",
            m.id
        ))
    })?;
    if sealed.scheme != SCHEME {
        return Err(Error::Failed(format!(
            "backup {}: encrypted with {:?}, which this version cannot read",
            m.id, sealed.scheme
        )));
    }
    let Some(ids) = ids else {
        let how = if sealed.mode == "passphrase" {
            "set the job's encryption.passphrase_env"
        } else {
            "give --identity FILE, or identity_file in the job's encryption table"
        };
        return Err(Error::Usage(format!(
            "backup {} is encrypted ({}); to read it, {how}",
            m.id, sealed.mode
        )));
    };
    let cipher = base64::engine::general_purpose::STANDARD
        .decode(&sealed.payload)
        .map_err(|e| {
            Error::Integrity(format!(
                "backup {}: the encrypted file list is not base64: {e}",
                m.id
            ))
        })?;
    let mut json = Vec::new();
    ids.decrypt(&cipher[..])
        .map_err(|e| match e {
            Error::Usage(m2) => Error::Usage(format!("backup {}: {m2}", m.id)),
            e => Error::Failed(format!("backup {}: {e}", m.id)),
        })?
        .read_to_end(&mut json)
        .map_err(|e| {
            Error::Integrity(format!(
                "backup {}: the encrypted file list is damaged: {e}",
                m.id
            ))
        })?;
    let hidden: Hidden = serde_json::from_slice(&json).map_err(|e| {
        Error::Integrity(format!(
            "backup {}: the decrypted file list cannot be read: {e}",
            m.id
        ))
    })?;
    let mut out = m.clone();
    out.files = hidden.files;
    out.deleted = hidden.deleted;
    out.changed = hidden.changed;
    out.source.description = hidden.source_description;
    if out.legacy_names {
        out.upgrade_names();
        out.legacy_names = false;
    }
    // The sealed list is checked as a clear one is when it is read.
    out.validate(&format!("backup {}", m.id))?;
    Ok(out)
}

/// A new X25519 identity file at `path` (mode 0600, never overwritten);
/// returns its public key.
pub fn keygen(path: &Path) -> Result<String> {
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::OpenOptionsExt;
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::Usage(format!(
                    "{} already exists; offsite never overwrites an identity (losing it loses every backup encrypted to it)",
                    path.display()
                ))
            } else {
                Error::io(format!("cannot create {}", path.display()), e)
            }
        })?;
    let created = jiff::Timestamp::now();
    let text = format!(
        "# created: {created} by offsite keygen\n# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(public)
}

/// Reads an identity file's public key back (for `keygen --show`-like uses in tests).
pub fn read_public(path: &Path) -> Result<String> {
    let f =
        File::open(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let mut text = String::new();
    BufReader::new(f)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .map(str::to_string)
        .ok_or_else(|| Error::Usage(format!("{} has no public key line", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{BackupKind, Compression, EntryKind, SourceInfo, Stats, Volume};

    fn manifest() -> Manifest {
        Manifest {
            format: crate::format::manifest::FORMAT,
            tool: "offsite test".into(),
            job: "db".into(),
            id: "20261122T021500Z-full".into(),
            host: None,
            set: None,
            kind: BackupKind::Full,
            parent: None,
            created_at: "2026-11-22T02:15:00Z".into(),
            source: SourceInfo {
                kind: "dir".into(),
                description: "/var/lib/secret-db".into(),
            },
            root: None,
            compression: Compression {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: None,
            volumes: vec![Volume {
                name: "vol-000000.tar.zst.age".into(),
                size: 10,
                sha256: Some("00".repeat(32)),
                blake3: None,
            }],
            files: vec![FileEntry {
                path: "customers/credit-cards.db".into(),
                kind: EntryKind::File,
                size: 3,
                mtime: 0,
                mtime_nsec: 0,
                mode: 0o600,
                uid: 0,
                gid: 0,
                sha256: Some("ab".repeat(32)),
                blake3: None,
                target: None,
                sparse: false,
                delta: None,
                volume: 0,
                backup: "20261122T021500Z-full".into(),
            }],
            deleted: vec!["old/payroll.db".into()],
            changed: vec![],
            stats: Stats::default(),
            degenerate: None,
            legacy_names: false,
        }
    }

    fn pair() -> (Key, Identities) {
        let id = age::x25519::Identity::generate();
        let key = Key::Recipients(vec![id.to_public()]);
        let ids = Identities {
            source: IdSource::X25519(id.to_string()),
            origin: "a test identity".into(),
        };
        (key, ids)
    }

    #[test]
    fn a_sealed_manifest_names_no_file_and_opens_back_whole() {
        let plain = manifest();
        let (key, ids) = pair();
        let sealed = seal_manifest(&plain, &key).unwrap();
        let text = String::from_utf8(sealed.to_json()).unwrap();
        for secret in ["credit-cards", "payroll", "secret-db", "customers"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // What retention and list need stays in clear.
        assert!(text.contains("20261122T021500Z-full") && text.contains("vol-000000.tar.zst.age"));
        let mut back = open_manifest(&sealed, Some(&ids)).unwrap();
        // Opened, it still says it was encrypted; everything else is as staged.
        assert!(is_encrypted(&back));
        back.encryption = None;
        assert_eq!(
            String::from_utf8(back.to_json()).unwrap(),
            String::from_utf8(plain.to_json()).unwrap()
        );
    }

    #[test]
    fn without_or_with_a_wrong_identity_the_file_list_stays_closed() {
        let (key, _) = pair();
        let (_, other) = pair();
        let sealed = seal_manifest(&manifest(), &key).unwrap();
        let none = open_manifest(&sealed, None).unwrap_err().to_string();
        assert!(none.contains("--identity"), "{none}");
        let wrong = open_manifest(&sealed, Some(&other))
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("does not open this backup"), "{wrong}");
    }

    #[test]
    fn a_passphrase_seals_and_opens() {
        let key = Key::Passphrase(SecretString::from("correct horse".to_string()));
        let sealed = seal_manifest(&manifest(), &key).unwrap();
        let ids = Identities {
            source: IdSource::Passphrase(SecretString::from("correct horse".to_string())),
            origin: "a passphrase".into(),
        };
        assert_eq!(open_manifest(&sealed, Some(&ids)).unwrap().files.len(), 1);
    }

    #[test]
    fn recipients_are_checked() {
        assert!(check_recipient("age1xyz").is_err());
        let id = age::x25519::Identity::generate();
        assert!(check_recipient(&id.to_public().to_string()).is_ok());
    }
}
