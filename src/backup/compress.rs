//! Snapshot compression (issue 11, opt-in): a zstd encoder between the snapshot stream and
//! the upload, and a zstd decoder between the download and the file etcd's tool reads. Both
//! stream: nothing holds more than the codec's window and one chunk.
//!
//! Which objects are compressed is the destination's (`compression`) and, when reading, the
//! object's metadata or key suffix ([`super::key::compression_of_key`]).

use std::io;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWrite;
use tokio_util::io::{ReaderStream, StreamReader};

use super::Error;

/// How much compressed data is read out of the encoder at a time.
const CHUNK: usize = 1 << 20;

/// `chunks` compressed as one zstd frame (level 3), as a stream of compressed chunks.
///
/// # Errors
/// An error of `chunks` comes out as itself; a failing encoder as [`Error::Compress`].
pub fn zstd_compress<S>(chunks: S) -> impl Stream<Item = Result<Bytes, Error>> + Send
where
    S: Stream<Item = Result<Bytes, Error>> + Send,
{
    let reader = StreamReader::new(chunks.map(|c| c.map_err(io::Error::other)));
    let encoder = async_compression::tokio::bufread::ZstdEncoder::new(reader);
    ReaderStream::with_capacity(encoder, CHUNK).map(|c| c.map_err(from_io))
}

/// A writer that decompresses one zstd stream into `inner`; `shutdown` finishes it.
pub fn zstd_decompressor<W: AsyncWrite>(
    inner: W,
) -> async_compression::tokio::write::ZstdDecoder<W> {
    async_compression::tokio::write::ZstdDecoder::new(inner)
}

/// An error of the snapshot stream, back from the `io::Error` it crossed the codec as.
fn from_io(e: io::Error) -> Error {
    match e.downcast::<Error>() {
        Ok(inner) => inner,
        Err(e) => Error::Compress(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"member-{}\"}}\n", i % 7).into_bytes())
            .collect()
    }

    #[tokio::test]
    async fn compressed_chunks_decompress_to_the_input() {
        let input = text(20_000);
        let chunks: Vec<Result<Bytes, Error>> = input
            .chunks(7_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let compressed: Vec<u8> = zstd_compress(futures::stream::iter(chunks))
            .map(|c| c.unwrap())
            .collect::<Vec<Bytes>>()
            .await
            .concat();
        assert!(compressed.len() * 5 < input.len(), "{}", compressed.len());
        let mut out = Vec::new();
        let mut decoder = zstd_decompressor(&mut out);
        for part in compressed.chunks(1000) {
            decoder.write_all(part).await.unwrap();
        }
        decoder.shutdown().await.unwrap();
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn a_failing_snapshot_stream_fails_with_its_own_error() {
        let chunks: Vec<Result<Bytes, Error>> = vec![
            Ok(Bytes::from(text(100))),
            Err(Error::NoHealthyMember { last: None }),
        ];
        let results: Vec<Result<Bytes, Error>> =
            zstd_compress(futures::stream::iter(chunks)).collect().await;
        let err = results.into_iter().find_map(Result::err).unwrap();
        assert_eq!(err.reason(), "NoHealthyMember");
    }

    #[tokio::test]
    async fn a_corrupt_stream_fails_to_decompress() {
        let mut out = Vec::new();
        let mut decoder = zstd_decompressor(&mut out);
        let written = async {
            decoder.write_all(b"not a zstd frame at all").await?;
            decoder.shutdown().await
        }
        .await;
        assert!(written.is_err());
    }
}
