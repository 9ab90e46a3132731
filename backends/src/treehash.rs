//! SHA-256 tree hashes, the checksum the Amazon Glacier vault API wants
//! with every upload (`x-amz-sha256-tree-hash`) and reports for every
//! archive and job output.
//!
//! The data is cut into 1 MiB chunks (the last may be shorter); each chunk's
//! SHA-256 is a leaf; each level up hashes the concatenation of two
//! neighbours, and an odd one out moves up as it is; the root is the tree
//! hash. Data under 1 MiB has its plain SHA-256 as tree hash, and so does
//! empty data. The hasher streams: it keeps one running SHA-256 and 32 bytes
//! per MiB seen (128 KiB for a 4 GiB archive).

use sha2::{Digest, Sha256};

/// The chunk size of the leaves.
pub const CHUNK: usize = 1 << 20;

/// A streaming tree hash.
#[derive(Clone, Default)]
pub struct TreeHasher {
    leaves: Vec<[u8; 32]>,
    current: Sha256,
    filled: usize,
}

impl TreeHasher {
    /// A hasher that has seen no data.
    pub fn new() -> TreeHasher {
        TreeHasher::default()
    }

    /// Adds `data`, which follows what was added before.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (CHUNK - self.filled).min(data.len());
            self.current.update(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == CHUNK {
                let leaf = std::mem::take(&mut self.current).finalize();
                self.leaves.push(leaf.into());
                self.filled = 0;
            }
        }
    }

    /// The root, as 32 bytes.
    pub fn finish(mut self) -> [u8; 32] {
        if self.filled > 0 || self.leaves.is_empty() {
            self.leaves.push(self.current.finalize().into());
        }
        root(self.leaves)
    }

    /// The root in lowercase hex, as the API writes it.
    pub fn finish_hex(self) -> String {
        hex(&self.finish())
    }
}

/// The root of a level of hashes (leaves, or the tree hashes of parts that
/// are whole MiB multiples), which must not be empty.
pub fn root(mut level: Vec<[u8; 32]>) -> [u8; 32] {
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                if let [a, b] = pair {
                    let mut h = Sha256::new();
                    h.update(a);
                    h.update(b);
                    h.finalize().into()
                } else {
                    // The odd one out moves up as it is.
                    pair[0]
                }
            })
            .collect();
    }
    level
        .first()
        .copied()
        .unwrap_or_else(|| Sha256::digest([]).into())
}

/// The tree hash of `data`, in lowercase hex.
pub fn tree_hash_hex(data: &[u8]) -> String {
    let mut t = TreeHasher::new();
    t.update(data);
    t.finish_hex()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    /// Bytes that differ from chunk to chunk, so a swapped leaf would show.
    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 / 7 % 251) as u8).collect()
    }

    #[test]
    fn small_data_is_its_plain_sha256() {
        assert_eq!(
            tree_hash_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            tree_hash_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d = data(CHUNK);
        assert_eq!(tree_hash_hex(&d), hex(&sha(&[&d])));
    }

    /// AWS's worked example ("Tree Hash Example 1: Uploading an archive in a
    /// single request"): a 6.5 MB archive has 7 leaves, S1..S7; the next
    /// level is S12, S34, S56 and S7 moved up; then S1234 and S567; the root
    /// hashes those two.
    #[test]
    fn the_6_5_mib_example_from_the_glacier_guide() {
        let d = data(6 * CHUNK + CHUNK / 2);
        let s: Vec<[u8; 32]> = d.chunks(CHUNK).map(|c| sha(&[c])).collect();
        assert_eq!(s.len(), 7);
        let s12 = sha(&[&s[0], &s[1]]);
        let s34 = sha(&[&s[2], &s[3]]);
        let s56 = sha(&[&s[4], &s[5]]);
        let s1234 = sha(&[&s12, &s34]);
        let s567 = sha(&[&s56, &s[6]]);
        let want = sha(&[&s1234, &s567]);
        assert_eq!(tree_hash_hex(&d), hex(&want));
    }

    /// The guide's multipart example: parts of whole MiB multiples have tree
    /// hashes whose own tree hash is the archive's.
    #[test]
    fn part_roots_combine_into_the_archive_root() {
        let d = data(5 * CHUNK + 12_345);
        let parts: Vec<[u8; 32]> = d
            .chunks(2 * CHUNK)
            .map(|p| {
                let mut t = TreeHasher::new();
                t.update(p);
                t.finish()
            })
            .collect();
        assert_eq!(hex(&root(parts)), tree_hash_hex(&d));
    }

    #[test]
    fn how_the_data_arrives_does_not_matter() {
        let d = data(3 * CHUNK + 7);
        for step in [1usize, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let mut t = TreeHasher::new();
            for piece in d.chunks(step) {
                t.update(piece);
            }
            assert_eq!(t.finish_hex(), tree_hash_hex(&d), "pieces of {step}");
        }
    }
}
