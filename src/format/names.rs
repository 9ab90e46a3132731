//! How file names are written in a manifest.
//!
//! A Linux file name is any sequence of bytes but `/` and NUL; a manifest is
//! JSON, whose strings are Unicode. Names are therefore written as UTF-8
//! with two kinds of bytes escaped as `%XX` (two uppercase hex digits):
//! every byte that is not part of valid UTF-8, and the byte `%` itself.
//! `data/ü.chk` stays `data/ü.chk`; a Latin-1 `caf\xe9` becomes `caf%E9`;
//! `100%` becomes `100%25`. The encoding is one-to-one: every name has
//! exactly one encoded form, and a manifest holding any other (`%41` for
//! `A`, a `%` not followed by two hex digits) is refused.
//!
//! Manifests of format 1 (written before this encoding) hold names as
//! plain UTF-8; [`legacy_to_encoded`] brings them into this form when they
//! are read, so the rest of the program sees one encoding.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The encoded form of the name (or `/`-separated path) `raw`.
pub fn encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' {
                out.push_str("%25");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bytes `text` encodes, or `None` when it is not in the one encoded
/// form (see the module documentation).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only the one form: `%41` for `A` decodes, but is not how `A` is written.
    (encode(&out) == text).then_some(out)
}

/// Whether `text` is a name in its one encoded form.
pub fn is_canonical(text: &str) -> bool {
    decode(text).is_some()
}

/// The encoded form of a format-1 name (plain UTF-8): only `%` changes.
pub fn legacy_to_encoded(text: &str) -> String {
    text.replace('%', "%25")
}

/// `root` joined with the encoded relative path `rel`, as the file system
/// names it. `None` when `rel` is not in the encoded form.
pub fn join(root: &std::path::Path, rel: &str) -> Option<PathBuf> {
    let raw = decode(rel)?;
    Some(root.join(OsStr::from_bytes(&raw)))
}

/// The encoded form of a path relative to a source folder.
pub fn of_path(rel: &std::path::Path) -> String {
    encode(rel.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_one_encoded_form() {
        let table: &[(&[u8], &str)] = &[
            (b"plain/name.chk", "plain/name.chk"),
            ("ü/日本/😀".as_bytes(), "ü/日本/😀"),
            (b"100%", "100%25"),
            (b"%41", "%2541"),
            (b"caf\xe9", "caf%E9"),
            (b"\xff\xfe/x", "%FF%FE/x"),
            // A truncated UTF-8 sequence: each byte on its own.
            (b"a\xe2\x82", "a%E2%82"),
            (b"", ""),
        ];
        for (raw, text) in table {
            assert_eq!(encode(raw), *text, "{raw:?}");
            assert_eq!(decode(text).as_deref(), Some(*raw), "{text}");
        }
    }

    #[test]
    fn other_spellings_are_refused() {
        for bad in ["%41", "%e9", "%", "%2", "%ZZ", "a%2Fb", "%C3%BC"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn format_1_names_gain_only_an_escaped_percent() {
        assert_eq!(legacy_to_encoded("a%20b/ü"), "a%2520b/ü");
        assert_eq!(
            decode(&legacy_to_encoded("a%20b")).as_deref(),
            Some(&b"a%20b"[..])
        );
    }
}
