//! A request-response codec: a 4-byte little-endian length, then the postcard encoding of
//! the message. Each protocol gives its own size limits; a frame over the limit, or one that
//! does not decode, fails that stream with `InvalidData` (request-response reports it as a
//! failure for that request) and never panics the node. libp2p's built-in codecs cap messages
//! at 1 MiB, too small for a chunk, hence this one.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Limits of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest request accepted or sent.
    pub request_size_bytes_max: u32,
    /// Largest response accepted or sent.
    pub response_size_bytes_max: u32,
}

/// Postcard codec for request type `Req` and response type `Resp`.
pub struct PostcardCodec<Req, Resp> {
    limits: FrameLimits,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> PostcardCodec<Req, Resp> {
    /// A codec with these limits.
    pub fn new(limits: FrameLimits) -> Self {
        PostcardCodec {
            limits,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for PostcardCodec<Req, Resp> {
    fn clone(&self) -> Self {
        PostcardCodec::new(self.limits)
    }
}

async fn read_frame<T, M>(io: &mut T, max: u32) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: DeserializeOwned,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    io.read_exact(&mut buf).await?;
    postcard::from_bytes(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Encodes a message, refusing one over the limit (before anything is sent).
fn encode<M: Serialize>(msg: &M, max: u32) -> io::Result<Vec<u8>> {
    let buf = postcard::to_allocvec(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if u32::try_from(buf.len()).map_or(true, |l| l > max) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message of {} bytes exceeds the limit of {max}", buf.len()),
        ));
    }
    Ok(buf)
}

async fn write_frame<T>(io: &mut T, buf: Vec<u8>) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    // `encode` checked that the length fits in a u32.
    let len = buf.len() as u32;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(&buf).await?;
    io.flush().await
}

impl<Req, Resp> request_response::Codec for PostcardCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + 'static,
    Resp: Serialize + DeserializeOwned + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.limits.request_size_bytes_max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.limits.response_size_bytes_max).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let buf = encode(&req, self.limits.request_size_bytes_max)?;
        write_frame(io, buf).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, resp: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let buf = encode(&resp, self.limits.response_size_bytes_max)?;
        write_frame(io, buf).await
    }
}
