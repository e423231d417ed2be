//! A request-response codec. A frame is a 4-byte little-endian length and the postcard
//! encoding of the message's header, then a 4-byte length and the message's raw body (a
//! chunk's bytes; empty for messages without one, see [`Body`]). The body never passes
//! through serde: it is written from the sender's `Bytes` (for a chunk read, a view of the
//! chunk store's memory map) and read into one buffer that becomes the receiver's `Bytes`.
//! Each protocol gives its own size limits (header and body together); a frame over the
//! limit, or one that does not decode, fails that stream with `InvalidData`
//! (request-response reports it as a failure for that request) and never panics the node.
//! libp2p's built-in codecs cap messages at 1 MiB, too small for a chunk, hence this one.

use std::io;
use std::marker::PhantomData;

use bytes::Bytes;
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

/// A message that may carry a raw body beside its postcard header. The field holding the
/// body is `#[serde(skip)]`; the codec takes it out before encoding and puts it back after
/// decoding. Messages without a body keep the default (`None`).
pub trait Body {
    /// The body field of this message, if it has one.
    fn body_mut(&mut self) -> Option<&mut Bytes> {
        None
    }

    /// Takes the body out (left empty in `self`); `None` if this message has none.
    fn take_body(&mut self) -> Option<Bytes> {
        self.body_mut().map(std::mem::take)
    }

    /// Puts a received body back; an error if it is not empty and this message has none.
    fn put_body(&mut self, body: Bytes) -> io::Result<()> {
        match self.body_mut() {
            Some(field) => {
                *field = body;
                Ok(())
            }
            None if body.is_empty() => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a body on a message that carries none",
            )),
        }
    }
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

fn too_large(what: &str, len: usize, max: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} of {len} bytes exceeds the limit of {max}"),
    )
}

async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    // A u32 always fits in a usize on the platforms HADSS runs on (64-bit).
    Ok(u32::from_le_bytes(len) as usize)
}

async fn read_frame<T, M>(io: &mut T, max: u32) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: DeserializeOwned + Body,
{
    let header_len = read_len(io).await?;
    if header_len > max as usize {
        return Err(too_large("frame header", header_len, max));
    }
    let mut header = vec![0u8; header_len];
    io.read_exact(&mut header).await?;
    let body_len = read_len(io).await?;
    if header_len + body_len > max as usize {
        return Err(too_large("frame", header_len + body_len, max));
    }
    let mut message: M = postcard::from_bytes(&header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; body_len];
    io.read_exact(&mut body).await?;
    message.put_body(Bytes::from(body))?;
    Ok(message)
}

/// Encodes a message's header and takes out its body, refusing a frame over the limit
/// (before anything is sent).
fn encode<M: Serialize + Body>(mut msg: M, max: u32) -> io::Result<(Vec<u8>, Bytes)> {
    let body = msg.take_body().unwrap_or_default();
    let header = postcard::to_allocvec(&msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = header.len() + body.len();
    if len > max as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message of {len} bytes exceeds the limit of {max}"),
        ));
    }
    Ok((header, body))
}

async fn write_frame<T>(io: &mut T, (header, body): (Vec<u8>, Bytes)) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    // `encode` checked that both lengths fit the limit, a u32.
    let mut head = Vec::with_capacity(8 + header.len());
    head.extend_from_slice(&(header.len() as u32).to_le_bytes());
    head.extend_from_slice(&header);
    head.extend_from_slice(&(body.len() as u32).to_le_bytes());
    io.write_all(&head).await?;
    if !body.is_empty() {
        io.write_all(&body).await?;
    }
    io.flush().await
}

impl<Req, Resp> request_response::Codec for PostcardCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Body + Send + 'static,
    Resp: Serialize + DeserializeOwned + Body + Send + 'static,
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
        let frame = encode(req, self.limits.request_size_bytes_max)?;
        write_frame(io, frame).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, resp: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = encode(resp, self.limits.response_size_bytes_max)?;
        write_frame(io, frame).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        WithBody(u32, #[serde(skip)] Bytes),
        Plain(u32),
    }

    impl Body for Msg {
        fn body_mut(&mut self) -> Option<&mut Bytes> {
            match self {
                Msg::WithBody(_, b) => Some(b),
                Msg::Plain(_) => None,
            }
        }
    }

    fn roundtrip(msg: Msg, max: u32) -> io::Result<Msg> {
        futures::executor::block_on(async {
            let mut wire = Cursor::new(Vec::new());
            write_frame(&mut wire, encode(msg, max)?).await?;
            wire.set_position(0);
            read_frame(&mut wire, max).await
        })
    }

    #[test]
    fn bodies_travel_raw_beside_the_header() {
        let body = Bytes::from(vec![7u8; 10_000]);
        assert_eq!(
            roundtrip(Msg::WithBody(3, body.clone()), 20_000).unwrap(),
            Msg::WithBody(3, body)
        );
        assert_eq!(roundtrip(Msg::Plain(9), 100).unwrap(), Msg::Plain(9));
        assert_eq!(
            roundtrip(Msg::WithBody(1, Bytes::new()), 100).unwrap(),
            Msg::WithBody(1, Bytes::new())
        );
    }

    #[test]
    fn limits_count_the_body_and_bad_frames_fail_cleanly() {
        // The sender refuses a message whose header and body together pass the limit.
        let big = Msg::WithBody(0, Bytes::from(vec![0u8; 200]));
        assert_eq!(encode(big, 100).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let read =
            |bytes: Vec<u8>, max: u32| futures::executor::block_on(read_frame::<_, Msg>(&mut Cursor::new(bytes), max));
        let header = postcard::to_allocvec(&Msg::Plain(5)).unwrap();
        let frame = |header: &[u8], body_len: u32, body: &[u8]| {
            let mut f = (header.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(header);
            f.extend_from_slice(&body_len.to_le_bytes());
            f.extend_from_slice(body);
            f
        };
        // The receiver refuses a body length past the limit before allocating it.
        let err = read(frame(&header, u32::MAX, &[]), 1000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A body on a message that carries none.
        let err = read(frame(&header, 3, b"abc"), 1000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A header that does not decode; a frame cut short.
        assert_eq!(
            read(frame(&[0xff; 8], 0, &[]), 1000).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            read(frame(&header, 10, b"abc"), 1000).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(read(vec![1, 0], 1000).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
