//! Reading a source file for packing: whole (hashed as it streams into the
//! archive), or block by block against its parent's fingerprints, keeping
//! only the blocks that changed (see [`crate::format::blocks`]).

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::backup::blockmap::{BlockMap, BlockMapWriter};
use crate::format::blocks::{BlockHasher, Fingerprint, push_block};
use crate::format::digest::{Algorithm, Digest, Hasher};
use crate::stop::Stop;

/// Files are read in pieces of this size (or of one block, when larger).
pub(super) const READ_BUF: usize = 1 << 20;

/// The fingerprints a backup packs against, and those it writes.
pub(super) struct BlockMaps {
    /// The parent's map (an incremental's, when the staging folder has it).
    pub(super) parent: Option<BlockMap>,
    /// This backup's map; None when the job has `block_size = "off"`.
    pub(super) out: Option<BlockMapWriter>,
}

impl BlockMaps {
    /// No fingerprints read or written.
    #[cfg(test)]
    pub(super) fn none() -> BlockMaps {
        BlockMaps {
            parent: None,
            out: None,
        }
    }
}

/// How a file's content is hashed as it is read.
enum FileHash {
    /// Whole, in one hash.
    Plain(Hasher),
    /// Block by block: the blocks' fingerprints, and the whole hash merged
    /// from them.
    Blocks {
        hasher: BlockHasher,
        block_size: usize,
        prints: Vec<Fingerprint>,
    },
}

/// Reads exactly `size` bytes of a file, hashing them; pads with zeros (and
/// says so) when the file shrank while read, so the tar header stays true.
pub(super) struct HashingReader {
    /// The file being read.
    pub(super) file: File,
    /// Bytes still to hand out: the size the tar header announced.
    remaining: u64,
    hash: FileHash,
    /// The file ended before `size` bytes (it shrank while read).
    pub(super) short: bool,
    /// Checked on every piece, so a stop does not wait for a large file's end.
    stop: Stop,
    /// The file is read in pieces of up to `READ_BUF` (or one block), each
    /// hashed whole (BLAKE3 uses its SIMD lanes only on large inputs; tar
    /// asks for 8 KiB at a time), and handed out from here.
    piece: Vec<u8>,
    pos: usize,
}

impl HashingReader {
    /// A reader of `size` bytes of `file`, hashed whole, or block by block
    /// with `block_size` (then the whole hash is BLAKE3's, merged from the
    /// blocks).
    pub(super) fn new(file: File, size: u64, block_size: Option<u64>, stop: Stop) -> Self {
        let hash = match block_size {
            None => FileHash::Plain(Hasher::new(Algorithm::CURRENT)),
            Some(bs) => FileHash::Blocks {
                hasher: BlockHasher::new(bs),
                block_size: bs as usize,
                prints: Vec::with_capacity(size.div_ceil(bs) as usize),
            },
        };
        HashingReader {
            file,
            remaining: size,
            hash,
            short: false,
            stop,
            piece: Vec::with_capacity(READ_BUF),
            pos: 0,
        }
    }

    /// The most one piece holds: a whole number of blocks.
    fn piece_len(&self) -> usize {
        match &self.hash {
            FileHash::Plain(_) => READ_BUF,
            FileHash::Blocks { block_size, .. } => READ_BUF.max(*block_size),
        }
    }

    /// Reads the next piece. A file that shrank while it was read is padded
    /// with zeros up to the size in the tar header (and reported as changed).
    fn fill(&mut self) -> io::Result<()> {
        if self.stop.requested() {
            return Err(io::Error::other("stop requested"));
        }
        let max = self.piece_len();
        let want = usize::try_from(self.remaining).map_or(max, |r| r.min(max));
        self.piece.resize(want, 0);
        let mut got = 0;
        while got < want && !self.short {
            match self.file.read(&mut self.piece[got..]) {
                Ok(0) => self.short = true,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.piece[got..].fill(0);
        match &mut self.hash {
            FileHash::Plain(h) => h.update(&self.piece),
            FileHash::Blocks {
                hasher,
                block_size,
                prints,
            } => prints.extend(self.piece.chunks(*block_size).map(|b| hasher.block(b))),
        }
        self.remaining -= want as u64;
        self.pos = 0;
        Ok(())
    }

    /// The whole file's hash, and its blocks' fingerprints when it was
    /// read block by block.
    pub(super) fn finish(self) -> (Digest, Option<Vec<Fingerprint>>) {
        match self.hash {
            FileHash::Plain(h) => (h.finish(), None),
            FileHash::Blocks { hasher, prints, .. } => (hasher.finish(), Some(prints)),
        }
    }
}

impl Read for HashingReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.piece.len() {
            if self.remaining == 0 {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.piece.len() - self.pos);
        out[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A file read block by block against its parent's fingerprints.
pub(super) struct Scan {
    /// The runs of blocks that differ from the parent's (or are new).
    pub(super) runs: Vec<[u64; 2]>,
    /// Those blocks, back to back, from the start.
    pub(super) spool: File,
    /// Their bytes.
    pub(super) stored: u64,
    /// Their BLAKE3 hash.
    pub(super) stored_hash: Digest,
    /// The whole file's hash.
    pub(super) digest: Digest,
    /// Every block's fingerprint.
    pub(super) prints: Vec<Fingerprint>,
    /// The file ended early (it shrank while read).
    pub(super) short: bool,
    /// The file as read, for the changed-while-read check.
    pub(super) file: File,
}

/// Reads all of `reader` (in block mode), comparing each block with
/// `parent`'s fingerprint at the same place, and copies the blocks that
/// differ into a spool file at `spool_path` (removed again at once: the
/// open file is the spool).
pub(super) fn scan(
    mut reader: HashingReader,
    parent: &[Fingerprint],
    spool_path: &Path,
) -> io::Result<Scan> {
    let block_size = match &reader.hash {
        FileHash::Blocks { block_size, .. } => *block_size,
        FileHash::Plain(_) => return Err(io::Error::other("not read by blocks")),
    };
    let spool_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(spool_path)?;
    let _ = std::fs::remove_file(spool_path);
    let mut spool = io::BufWriter::with_capacity(READ_BUF, spool_file);
    let mut stored_hash = Hasher::new(Algorithm::Blake3);
    let mut runs = Vec::new();
    let mut stored = 0u64;
    let mut index = 0u64;
    while reader.remaining > 0 {
        reader.fill()?;
        let FileHash::Blocks { prints, .. } = &reader.hash else {
            break;
        };
        for block in reader.piece.chunks(block_size) {
            let i = index as usize;
            if parent.get(i) != prints.get(i) {
                spool.write_all(block)?;
                stored_hash.update(block);
                stored += block.len() as u64;
                push_block(&mut runs, index);
            }
            index += 1;
        }
    }
    let mut spool = spool.into_inner().map_err(|e| e.into_error())?;
    spool.rewind()?;
    let short = reader.short;
    let file = reader.file.try_clone()?;
    let (digest, prints) = reader.finish();
    Ok(Scan {
        runs,
        spool,
        stored,
        stored_hash: stored_hash.finish(),
        digest,
        prints: prints.unwrap_or_default(),
        short,
        file,
    })
}
