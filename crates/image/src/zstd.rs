//! A zstd reader for whole streams: ruzstd's `StreamingDecoder` reads one frame, but
//! layers may hold several (zstd:chunked layers are many frames plus skippable ones).

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// Decodes every frame of `source` in turn, skipping skippable frames.
pub(crate) struct ZstdFrames<R> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    pub(crate) fn new(source: R) -> Self {
        ZstdFrames {
            source,
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.source.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.reset(&mut self.source) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped =
                            io::copy(&mut (&mut self.source).take(length.into()), &mut io::sink())?;
                        if skipped != u64::from(length) {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "truncated skippable zstd frame",
                            ));
                        }
                        continue;
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            while self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(io::Error::other)?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruzstd::encoding::{CompressionLevel, compress_to_vec};

    #[test]
    fn several_frames_and_skippable_frames() {
        let first = b"first frame ".repeat(1000);
        let second = b"second frame".repeat(1000);
        let mut stream = compress_to_vec(&first[..], CompressionLevel::Fastest);
        // A skippable frame: magic 0x184D2A50..5F, little-endian length, payload.
        stream.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        stream.extend_from_slice(&5u32.to_le_bytes());
        stream.extend_from_slice(b"skip!");
        stream.extend(compress_to_vec(&second[..], CompressionLevel::Fastest));
        let mut decoded = Vec::new();
        ZstdFrames::new(&stream[..])
            .read_to_end(&mut decoded)
            .expect("decode");
        assert_eq!(decoded, [first, second].concat());
    }

    #[test]
    fn garbage_is_an_error() {
        let mut decoded = Vec::new();
        let error =
            ZstdFrames::new(&b"\x28\xb5\x2f\xfdnot zstd at all"[..]).read_to_end(&mut decoded);
        assert!(error.is_err());
    }
}
