//! The zstd encoder of staged volumes, on `zstd-sys` rather than the `zstd`
//! crate's writer, for one parameter that crate does not expose.
//!
//! zstd 1.5.7 (the library `zstd-sys` builds) splits blocks before
//! compressing them (`ZSTD_c_blockSplitterLevel`, "auto" by default). At
//! level 3 on the bench's data that cost about 35% more CPU than with it off
//! (1.07–1.24 s against 1.68–1.94 s for 434 MiB on 2 workers) for output
//! 0.06% smaller. `zstd -3` of Debian's zstd 1.5.4, the bench's reference,
//! does not split either. So volumes are written with the splitter off;
//! the frames are ordinary zstd frames (any zstd reads them).

use std::io::{self, Write};
use std::ptr::NonNull;

use zstd_sys::{
    ZSTD_CCtx, ZSTD_CCtx_setParameter, ZSTD_CStreamOutSize, ZSTD_EndDirective, ZSTD_cParameter,
    ZSTD_compressStream2, ZSTD_createCCtx, ZSTD_freeCCtx, ZSTD_getErrorName, ZSTD_inBuffer,
    ZSTD_isError, ZSTD_outBuffer,
};

/// `ZSTD_c_blockSplitterLevel`'s value for "no splitting".
const NO_BLOCK_SPLITTING: i32 = 1;

/// Compresses what is written into one zstd frame (with a content
/// checksum) written to `inner`; [`ZstdWriter::finish`] ends the frame.
pub(crate) struct ZstdWriter<W: Write> {
    cctx: NonNull<ZSTD_CCtx>,
    out: Vec<u8>,
    inner: W,
}

// SAFETY: the context is owned by this writer alone and zstd contexts may be
// used from any one thread at a time; it is never shared.
unsafe impl<W: Write + Send> Send for ZstdWriter<W> {}

/// The error for a zstd return code, if it is one.
fn check(code: usize) -> io::Result<usize> {
    // SAFETY: ZSTD_isError and ZSTD_getErrorName take any code; the name is
    // a static NUL-terminated string.
    unsafe {
        if ZSTD_isError(code) == 0 {
            return Ok(code);
        }
        let name = std::ffi::CStr::from_ptr(ZSTD_getErrorName(code));
        Err(io::Error::other(format!(
            "zstd: {}",
            name.to_string_lossy()
        )))
    }
}

impl<W: Write> ZstdWriter<W> {
    /// A writer compressing at `level` on `workers` threads (0: in the
    /// caller's thread), with a content checksum and no block splitting.
    pub(crate) fn new(inner: W, level: i32, workers: u32) -> io::Result<Self> {
        // SAFETY: ZSTD_createCCtx returns a new context or null.
        let cctx = NonNull::new(unsafe { ZSTD_createCCtx() })
            .ok_or_else(|| io::Error::other("zstd: cannot allocate a compression context"))?;
        let writer = ZstdWriter {
            cctx,
            // SAFETY: a constant of the library.
            out: vec![0u8; unsafe { ZSTD_CStreamOutSize() }],
            inner,
        };
        let workers = i32::try_from(workers).unwrap_or(i32::MAX);
        for (param, value) in [
            (ZSTD_cParameter::ZSTD_c_compressionLevel, level),
            (ZSTD_cParameter::ZSTD_c_checksumFlag, 1),
            (ZSTD_cParameter::ZSTD_c_nbWorkers, workers),
            (
                ZSTD_cParameter::ZSTD_c_experimentalParam20,
                NO_BLOCK_SPLITTING,
            ),
        ] {
            // SAFETY: the context is valid until drop.
            check(unsafe { ZSTD_CCtx_setParameter(writer.cctx.as_ptr(), param, value) })?;
        }
        Ok(writer)
    }

    /// The writer the frame goes to.
    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Feeds `input` with `mode`, writing out what comes out, until the input
    /// is taken and (for a flush or the end) nothing is left inside.
    fn run(&mut self, input: &[u8], mode: ZSTD_EndDirective) -> io::Result<()> {
        let mut inb = ZSTD_inBuffer {
            src: input.as_ptr().cast(),
            size: input.len(),
            pos: 0,
        };
        loop {
            let mut outb = ZSTD_outBuffer {
                dst: self.out.as_mut_ptr().cast(),
                size: self.out.len(),
                pos: 0,
            };
            // SAFETY: both buffers point into live slices of the sizes given,
            // and the context is valid until drop.
            let left = check(unsafe {
                ZSTD_compressStream2(self.cctx.as_ptr(), &mut outb, &mut inb, mode)
            })?;
            self.inner.write_all(&self.out[..outb.pos])?;
            let done = match mode {
                ZSTD_EndDirective::ZSTD_e_continue => inb.pos == inb.size,
                _ => left == 0,
            };
            if done {
                return Ok(());
            }
        }
    }

    /// Ends the frame and returns the writer it went to.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.run(&[], ZSTD_EndDirective::ZSTD_e_end)?;
        self.inner.flush()?;
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again: the context is
        // freed here, and `out` and `inner` are each moved out once.
        unsafe {
            ZSTD_freeCCtx(this.cctx.as_ptr());
            drop(std::ptr::read(&this.out));
            Ok(std::ptr::read(&this.inner))
        }
    }
}

impl<W: Write> Write for ZstdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.run(buf, ZSTD_EndDirective::ZSTD_e_continue)?;
        Ok(buf.len())
    }

    /// Writes out everything written so far (the frame stays open).
    fn flush(&mut self) -> io::Result<()> {
        self.run(&[], ZSTD_EndDirective::ZSTD_e_flush)?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for ZstdWriter<W> {
    fn drop(&mut self) {
        // SAFETY: created in `new`, freed only here (finish skips drop).
        unsafe {
            ZSTD_freeCCtx(self.cctx.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], workers: u32, flush_every: usize) -> Vec<u8> {
        let mut w = ZstdWriter::new(Vec::new(), 3, workers).expect("writer");
        for piece in data.chunks(flush_every) {
            w.write_all(piece).expect("write");
            w.flush().expect("flush");
        }
        w.finish().expect("finish")
    }

    #[test]
    fn frames_are_plain_zstd_with_a_checksum_on_any_worker_count() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
            .collect();
        for workers in [0, 2] {
            for flush_every in [1 << 20, 3_000_000] {
                let frame = compress(&data, workers, flush_every);
                assert!(frame.len() < data.len(), "it compresses");
                assert_eq!(zstd::decode_all(&frame[..]).expect("decodes"), data);
                // Frame header descriptor: the content checksum flag (bit 2).
                assert_eq!(frame[4] & 0b100, 0b100, "checksum flag");
            }
        }
        assert_eq!(
            zstd::decode_all(&compress(&[], 2, 1)[..]).expect("empty"),
            b""
        );
    }

    #[test]
    fn the_experimental_parameter_set_is_the_block_splitter_of_the_linked_zstd() {
        // zstd numbers its experimental parameters; 1.5.7's zstd.h defines
        // ZSTD_c_blockSplitterLevel as ZSTD_c_experimentalParam20, with
        // values 0 to 6. Another zstd may mean something else by it: a
        // zstd-sys upgrade fails here until the mapping is checked again.
        // SAFETY: both functions only read their arguments.
        let (version, bounds) = unsafe {
            (
                zstd_sys::ZSTD_versionNumber(),
                zstd_sys::ZSTD_cParam_getBounds(ZSTD_cParameter::ZSTD_c_experimentalParam20),
            )
        };
        assert_eq!(
            version, 10507,
            "zstd is not 1.5.7: check in zstd.h that ZSTD_c_blockSplitterLevel is still ZSTD_c_experimentalParam20, then update this test"
        );
        assert_eq!(check(bounds.error).expect("bounds"), 0);
        assert_eq!((bounds.lowerBound, bounds.upperBound), (0, 6));
    }

    #[test]
    fn a_damaged_frame_fails_its_checksum() {
        let data = vec![7u8; 100_000];
        let mut frame = compress(&data, 0, 100_000);
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(zstd::decode_all(&frame[..]).is_err());
    }
}
