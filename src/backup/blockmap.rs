//! The block fingerprints of a staged backup's large files, kept in the
//! staging folder beside the backup's local manifest (`<id>.blocks`), for
//! the next incremental to compare with (see [`crate::format::blocks`]).
//!
//! The file is advisory. Each record names the version it describes (the
//! file's size and whole hash) and is used only for a parent entry with the
//! same ones; a map that is missing, truncated or damaged only makes the
//! next incremental pack changed files whole. It never leaves the host: a
//! destination holds no fingerprints (a put-only host could not read them
//! back anyway).
//!
//! Layout: the line `offsite-blockmap 1\n`, then records of: path length
//! (u32), path (the manifest's encoding), size (u64), block size (u64), the
//! whole file's BLAKE3 hash (32 bytes), block count (u64), then that many
//! fingerprints of [`FINGERPRINT_LEN`] bytes; integers little-endian.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::blocks::{FINGERPRINT_LEN, Fingerprint};
use crate::format::digest::{Algorithm, Digest};

const MAGIC: &[u8] = b"offsite-blockmap 1\n";
/// A path longer than this is not one a manifest holds: the map is damaged.
const MAX_PATH: usize = 1 << 16;

/// One file's fingerprints, as found in a map.
#[derive(Debug, Clone)]
pub struct Record {
    /// The file's size when it was fingerprinted.
    pub size: u64,
    /// The block size.
    pub block_size: u64,
    /// The whole file's BLAKE3 hash, hex.
    pub blake3: String,
    count: u64,
    /// Where its fingerprints start in the map file.
    offset: u64,
}

impl Record {
    /// Whether it describes the version a manifest entry records.
    pub fn describes(&self, size: u64, digest: Option<&Digest>) -> bool {
        self.size == size
            && digest.is_some_and(|d| d.algorithm == Algorithm::Blake3 && d.hex == self.blake3)
    }
}

/// A map read back: the records by path, their fingerprints read on demand.
pub struct BlockMap {
    file: File,
    records: HashMap<String, Record>,
}

impl BlockMap {
    /// Reads the map at `path`; None when there is none or it is damaged
    /// (the incremental then packs changed files whole).
    pub fn open(path: &Path) -> Option<BlockMap> {
        let file = File::open(path).ok()?;
        let records = index(&file).ok()?;
        Some(BlockMap { file, records })
    }

    /// The record of `path`, if the map has one.
    pub fn record(&self, path: &str) -> Option<&Record> {
        self.records.get(path)
    }

    /// The fingerprints of `rec`.
    pub fn fingerprints(&self, rec: &Record) -> io::Result<Vec<Fingerprint>> {
        let len = usize::try_from(rec.count)
            .ok()
            .and_then(|c| c.checked_mul(FINGERPRINT_LEN))
            .ok_or_else(|| io::Error::other("block map record too large"))?;
        let mut raw = vec![0u8; len];
        self.file.read_exact_at(&mut raw, rec.offset)?;
        Ok(raw
            .chunks_exact(FINGERPRINT_LEN)
            .map(|c| {
                let mut fp = [0u8; FINGERPRINT_LEN];
                fp.copy_from_slice(c);
                fp
            })
            .collect())
    }
}

/// Reads every record's header, skipping the fingerprints.
fn index(file: &File) -> io::Result<HashMap<String, Record>> {
    let total = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(io::Error::other("not a block map"));
    }
    let mut records = HashMap::new();
    let mut at = MAGIC.len() as u64;
    while at < total {
        let path_len = read_u32(&mut r)? as usize;
        if path_len > MAX_PATH {
            return Err(io::Error::other("damaged block map"));
        }
        let mut path = vec![0u8; path_len];
        r.read_exact(&mut path)?;
        let size = read_u64(&mut r)?;
        let block_size = read_u64(&mut r)?;
        let mut hash = [0u8; 32];
        r.read_exact(&mut hash)?;
        let count = read_u64(&mut r)?;
        at += 4 + path_len as u64 + 8 + 8 + 32 + 8;
        let prints = count
            .checked_mul(FINGERPRINT_LEN as u64)
            .filter(|&n| at.checked_add(n).is_some_and(|end| end <= total))
            .ok_or_else(|| io::Error::other("truncated block map"))?;
        let path = String::from_utf8(path).map_err(io::Error::other)?;
        records.insert(
            path,
            Record {
                size,
                block_size,
                blake3: hex(&hash),
                count,
                offset: at,
            },
        );
        at += prints;
        r.seek(SeekFrom::Start(at))?;
    }
    Ok(records)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A map being written while a backup is packed.
pub struct BlockMapWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl BlockMapWriter {
    /// Starts a map at `path` (replacing one a dead run left).
    pub fn create(path: &Path) -> io::Result<BlockMapWriter> {
        let mut out = BufWriter::new(crate::staging::private_file(path)?);
        out.write_all(MAGIC)?;
        Ok(BlockMapWriter {
            path: path.to_path_buf(),
            out,
        })
    }

    /// Records `prints` for `path`, a file of `size` bytes whose whole
    /// BLAKE3 hash is `blake3` (hex). A hash of another algorithm is not
    /// recorded: no parent entry could match it.
    pub fn add(
        &mut self,
        path: &str,
        size: u64,
        block_size: u64,
        digest: &Digest,
        prints: &[Fingerprint],
    ) -> io::Result<()> {
        let Some(hash) = (digest.algorithm == Algorithm::Blake3)
            .then(|| unhex(&digest.hex))
            .flatten()
        else {
            return Ok(());
        };
        let o = &mut self.out;
        o.write_all(&(path.len() as u32).to_le_bytes())?;
        o.write_all(path.as_bytes())?;
        o.write_all(&size.to_le_bytes())?;
        o.write_all(&block_size.to_le_bytes())?;
        o.write_all(&hash)?;
        o.write_all(&(prints.len() as u64).to_le_bytes())?;
        for p in prints {
            o.write_all(p)?;
        }
        Ok(())
    }

    /// Copies `rec` of `from` for `path` (a file unchanged since).
    pub fn copy(&mut self, path: &str, from: &BlockMap, rec: &Record) -> io::Result<()> {
        let prints = from.fingerprints(rec)?;
        let digest = Digest {
            algorithm: Algorithm::Blake3,
            hex: rec.blake3.clone(),
        };
        self.add(path, rec.size, rec.block_size, &digest, &prints)
    }

    /// Writes out what is buffered; answers where the map is.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        self.out.flush()?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        Digest {
            algorithm: Algorithm::Blake3,
            hex: hex(&[byte; 32]),
        }
    }

    #[test]
    fn records_read_back_and_damage_drops_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.blocks");
        let mut w = BlockMapWriter::create(&path).unwrap();
        w.add("a/b", 40000, 8192, &digest(1), &[[1; 16], [2; 16], [3; 16]])
            .unwrap();
        w.add("c", 5, 8192, &digest(2), &[[9; 16]]).unwrap();
        // Not BLAKE3: left out.
        let sha = Digest {
            algorithm: Algorithm::Sha256,
            hex: hex(&[3; 32]),
        };
        w.add("d", 5, 8192, &sha, &[[9; 16]]).unwrap();
        w.finish().unwrap();

        let m = BlockMap::open(&path).unwrap();
        let r = m.record("a/b").unwrap();
        assert!(r.describes(40000, Some(&digest(1))));
        assert!(!r.describes(40001, Some(&digest(1))));
        assert!(!r.describes(40000, Some(&digest(2))));
        assert_eq!(m.fingerprints(r).unwrap(), vec![[1; 16], [2; 16], [3; 16]]);
        assert_eq!(
            m.fingerprints(m.record("c").unwrap()).unwrap(),
            vec![[9; 16]]
        );
        assert!(m.record("d").is_none());

        // Copied forward, it reads the same.
        let path2 = dir.path().join("n.blocks");
        let mut w = BlockMapWriter::create(&path2).unwrap();
        w.copy("a/b", &m, r).unwrap();
        w.finish().unwrap();
        let n = BlockMap::open(&path2).unwrap();
        assert_eq!(
            n.fingerprints(n.record("a/b").unwrap()).unwrap(),
            vec![[1; 16], [2; 16], [3; 16]]
        );

        // Cut short anywhere, or with another first line, it is not used.
        let bytes = std::fs::read(&path).unwrap();
        for cut in [3, MAGIC.len() + 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(BlockMap::open(&path).is_none(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = b'X';
        std::fs::write(&path, &other).unwrap();
        assert!(BlockMap::open(&path).is_none());
        assert!(BlockMap::open(&dir.path().join("none")).is_none());
    }
}
