//! Block-level incrementals: how a file that changed in place is cut into
//! blocks, how each block is fingerprinted, and how an incremental records
//! which blocks it holds.
//!
//! A file of at least [`MIN_BLOCKS`] blocks is hashed block by block as it
//! is packed: each block's BLAKE3 chaining value (the hash of that subtree
//! of the file's BLAKE3 tree, [`blake3::hazmat`]) is its fingerprint, and
//! the file's own BLAKE3 hash is merged from them, so the fingerprints cost
//! no second pass over the data. The fingerprints stay in the staging folder
//! (see `crate::backup::blockmap`); the next incremental compares the
//! file's blocks with them and packs only the blocks that differ.
//!
//! In the manifest such a file carries a [`Delta`]: the block size, the
//! backup whose version of the file it patches (`base`, the parent), the
//! runs of changed blocks, and the hash of the bytes stored. Its archive
//! entry holds those blocks back to back, in order. Restore writes the
//! base version (itself rebuilt the same way), resizes it to the new size,
//! writes the stored blocks at their offsets, and checks the whole file's
//! hash before it reports success.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use serde::{Deserialize, Serialize};

use crate::format::digest::{Algorithm, Digest};

/// The smallest block size a job may set: a PostgreSQL page.
pub const MIN_BLOCK_SIZE: u64 = 8 << 10;
/// The largest block size a job may set.
pub const MAX_BLOCK_SIZE: u64 = 16 << 20;
/// A file is tracked block by block only from this many blocks on; a
/// smaller one is packed whole when it changes.
pub const MIN_BLOCKS: u64 = 16;
/// With `block_size = "auto"`, files get the smallest block size that
/// keeps them at most this many blocks (8 KiB up to 1 GiB, a PostgreSQL
/// segment's size; 16 KiB up to 2 GiB, ...): the fingerprints kept in the
/// staging folder are 1/512 of the data at most.
pub const AUTO_MAX_BLOCKS: u64 = 1 << 17;
/// The bytes of a block fingerprint kept: the first half of the chaining
/// value. A fingerprint only decides what is packed; restore checks every
/// rebuilt file against its full hash.
pub const FINGERPRINT_LEN: usize = 16;

/// A block's fingerprint.
pub type Fingerprint = [u8; FINGERPRINT_LEN];

/// How a job cuts files into blocks (`block_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSize {
    /// No block tracking: a changed file is packed whole.
    Off,
    /// By the file's size ([`auto_block_size`]).
    Auto,
    /// This size for every file, a power of two from [`MIN_BLOCK_SIZE`] to
    /// [`MAX_BLOCK_SIZE`].
    Fixed(u64),
}

impl BlockSize {
    /// The block size for a file of `size` bytes, or None when it is not
    /// tracked by blocks (too small, or tracking is off).
    pub fn for_file(self, size: u64) -> Option<u64> {
        let bs = match self {
            BlockSize::Off => return None,
            BlockSize::Auto => auto_block_size(size),
            BlockSize::Fixed(bs) => bs,
        };
        (size >= MIN_BLOCKS * bs).then_some(bs)
    }
}

/// The block size `auto` gives a file of `size` bytes.
pub fn auto_block_size(size: u64) -> u64 {
    size.div_ceil(AUTO_MAX_BLOCKS)
        .next_power_of_two()
        .clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE)
}

/// Whether `bs` is a block size a job may set.
pub fn valid_block_size(bs: u64) -> bool {
    bs.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs)
}

/// The changed blocks an incremental holds of a file it stores as a patch
/// of its parent's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// The block size, in bytes.
    pub block_size: u64,
    /// The backup whose version of the file this one patches (the
    /// parent of the backup that made the patch).
    pub base: String,
    /// The stored blocks, as runs `[first block, count]`, ascending and
    /// apart. The last block of the file may be short.
    pub blocks: Vec<[u64; 2]>,
    /// The BLAKE3 hash of the stored bytes (the archive entry).
    pub blake3: String,
}

impl Delta {
    /// The bytes the archive entry holds for a file of `size` bytes: the
    /// stored blocks, the last one short when the file ends inside it.
    pub fn stored_bytes(&self, size: u64) -> u64 {
        self.ranges(size).map(|(_, len)| len).sum()
    }

    /// The stored blocks as byte ranges `(offset, length)` of the file.
    pub fn ranges(&self, size: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let bs = self.block_size;
        self.blocks.iter().flat_map(move |&[first, count]| {
            (first..first.saturating_add(count)).map(move |b| {
                let start = b.saturating_mul(bs);
                (start, bs.min(size.saturating_sub(start)))
            })
        })
    }

    /// The hash of the stored bytes, as a digest.
    pub fn digest(&self) -> Digest {
        Digest {
            algorithm: Algorithm::Blake3,
            hex: self.blake3.clone(),
        }
    }

    /// What is wrong with it for a file of `size` bytes, if anything: a
    /// block size no job can set, runs out of order or past the file's end.
    pub fn problem(&self, size: u64) -> Option<String> {
        if !valid_block_size(self.block_size) {
            return Some(format!("block size {} is not valid", self.block_size));
        }
        let blocks = size.div_ceil(self.block_size);
        let mut next = 0u64;
        for &[first, count] in &self.blocks {
            let end = first.saturating_add(count);
            if count == 0 || first < next || end > blocks {
                return Some(format!(
                    "block run [{first}, {count}] is out of order or past the file's {blocks} blocks"
                ));
            }
            next = end;
        }
        if self.blake3.len() != 64 || !self.blake3.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some("the stored bytes' hash is not a BLAKE3 hash".into());
        }
        None
    }
}

/// Adds block `index` to `runs` (blocks come in ascending order).
pub fn push_block(runs: &mut Vec<[u64; 2]>, index: u64) {
    match runs.last_mut() {
        Some([first, count]) if *first + *count == index => *count += 1,
        _ => runs.push([index, 1]),
    }
}

/// Hashes a file block by block: each block's fingerprint, and the whole
/// file's BLAKE3 hash merged from the blocks' chaining values.
pub struct BlockHasher {
    block_size: u64,
    /// Blocks hashed so far.
    count: u64,
    /// Chaining values of complete subtrees not merged yet (BLAKE3's CV stack).
    stack: Vec<ChainingValue>,
    /// The first block's bytes, until a second comes: a file of one block
    /// has that block's plain hash as its own.
    first: Option<Vec<u8>>,
}

impl BlockHasher {
    /// A hasher for blocks of `block_size` bytes (a power of two of at
    /// least 1 KiB, BLAKE3's chunk).
    pub fn new(block_size: u64) -> BlockHasher {
        debug_assert!(block_size.is_power_of_two() && block_size >= blake3::CHUNK_LEN as u64);
        BlockHasher {
            block_size,
            count: 0,
            stack: Vec::new(),
            first: None,
        }
    }

    /// Hashes the next block (`block_size` bytes, or fewer for the last)
    /// and answers its fingerprint.
    pub fn block(&mut self, data: &[u8]) -> Fingerprint {
        let offset = self.count * self.block_size;
        let cv = blake3::Hasher::new()
            .set_input_offset(offset)
            .update(data)
            .finalize_non_root();
        if self.count == 0 {
            self.first = Some(data.to_vec());
        } else {
            self.first = None;
            // Merge what the blocks before this one complete, as BLAKE3's
            // own hasher does: the stack keeps one subtree per set bit.
            while self.stack.len() as u32 > self.count.count_ones() {
                let right = self.stack.pop().unwrap_or_default();
                let left = self.stack.pop().unwrap_or_default();
                self.stack
                    .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
            }
        }
        self.stack.push(cv);
        self.count += 1;
        let mut fp = [0u8; FINGERPRINT_LEN];
        fp.copy_from_slice(&cv[..FINGERPRINT_LEN]);
        fp
    }

    /// The whole file's hash.
    pub fn finish(mut self) -> Digest {
        let hash = match (self.count, self.first.take()) {
            (0, _) => blake3::hash(&[]),
            (1, Some(first)) => blake3::hash(&first),
            _ => {
                let mut right = self.stack.pop().unwrap_or_default();
                while self.stack.len() > 1 {
                    let left = self.stack.pop().unwrap_or_default();
                    right = merge_subtrees_non_root(&left, &right, Mode::Hash);
                }
                let left = self.stack.pop().unwrap_or_default();
                merge_subtrees_root(&left, &right, Mode::Hash)
            }
        };
        Digest {
            algorithm: Algorithm::Blake3,
            hex: hash.to_hex().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
            .collect()
    }

    #[test]
    fn the_merged_hash_is_blake3_of_the_whole_file() {
        for bs in [8192usize, 16384, 1 << 20] {
            for len in [
                0,
                1,
                bs - 1,
                bs,
                bs + 1,
                2 * bs,
                3 * bs - 7,
                4 * bs,
                5 * bs + 1,
                7 * bs,
                8 * bs,
                9 * bs + 1024,
                16 * bs + 3,
                31 * bs + 5000,
                33 * bs,
            ] {
                let d = data(len, 7);
                let mut h = BlockHasher::new(bs as u64);
                for block in d.chunks(bs) {
                    h.block(block);
                }
                assert_eq!(
                    h.finish().hex,
                    blake3::hash(&d).to_hex().to_string(),
                    "block size {bs}, length {len}"
                );
            }
        }
    }

    #[test]
    fn a_changed_block_changes_its_fingerprint_only() {
        let bs = 8192;
        let a = data(20 * bs, 1);
        let mut b = a.clone();
        b[5 * bs + 17] ^= 0xff;
        let prints = |d: &[u8]| {
            let mut h = BlockHasher::new(bs as u64);
            d.chunks(bs).map(|c| h.block(c)).collect::<Vec<_>>()
        };
        let (pa, pb) = (prints(&a), prints(&b));
        let differ: Vec<usize> = (0..pa.len()).filter(|&i| pa[i] != pb[i]).collect();
        assert_eq!(differ, vec![5]);
        // The same bytes at another offset are another block.
        let mut c = a.clone();
        c.copy_within(0..bs, bs);
        assert_ne!(prints(&c)[1], pa[1]);
    }

    #[test]
    fn block_sizes_by_file_size() {
        for (size, auto) in [
            (0u64, 8192u64),
            (1 << 20, 8192),
            (1 << 30, 8192),
            ((1 << 30) + 1, 16384),
            (16 << 30, 128 << 10),
            (1 << 50, MAX_BLOCK_SIZE),
        ] {
            assert_eq!(auto_block_size(size), auto, "{size}");
        }
        assert_eq!(BlockSize::Auto.for_file(128 << 10), Some(8192));
        assert_eq!(BlockSize::Auto.for_file((128 << 10) - 1), None);
        assert_eq!(BlockSize::Fixed(1 << 20).for_file(8 << 20), None);
        assert_eq!(BlockSize::Fixed(1 << 20).for_file(16 << 20), Some(1 << 20));
        assert_eq!(BlockSize::Off.for_file(1 << 30), None);
        for bad in [0, 4096, 12288, 32 << 20] {
            assert!(!valid_block_size(bad), "{bad}");
        }
    }

    #[test]
    fn runs_and_ranges() {
        let mut runs = Vec::new();
        for b in [0, 1, 2, 5, 7, 8] {
            push_block(&mut runs, b);
        }
        assert_eq!(runs, vec![[0, 3], [5, 1], [7, 2]]);
        let d = Delta {
            block_size: 8192,
            base: "p".into(),
            blocks: runs,
            blake3: "0".repeat(64),
        };
        // 8 full blocks and a short ninth of 100 bytes.
        let size = 8 * 8192 + 100;
        assert_eq!(d.stored_bytes(size), 5 * 8192 + 100);
        assert_eq!(d.problem(size), None);
        assert!(d.problem(7 * 8192).is_some(), "past the end");
        let unordered = Delta {
            blocks: vec![[5, 1], [0, 1]],
            ..d.clone()
        };
        assert!(unordered.problem(size).is_some());
        let empty_run = Delta {
            blocks: vec![[1, 0]],
            ..d.clone()
        };
        assert!(empty_run.problem(size).is_some());
        let overflow = Delta {
            blocks: vec![[u64::MAX, 2]],
            ..d
        };
        assert!(overflow.problem(size).is_some());
    }
}
