//! Object bodies in and out: a body streams in and is cut into content-addressed chunks
//! (each stored on W replicas with its chunk reference) or kept inline when small; a stored
//! body streams out chunk by chunk, fetched ahead and verified by the node.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::Digest;

use super::error::{ObjectError, ObjectResult};
use super::layout::{CHUNK_SIZE_BYTES, ChunkRef, INLINE_SIZE_BYTES_MAX, ObjectBody, ObjectMeta};
use super::store::{CHUNKS_IN_FLIGHT_MAX, CHUNKS_PREFETCH, ObjectStore};
use crate::node::{Node, NodeError};
use crate::storage::refs::ChunkHolder;

/// An object's bytes as they stream out.
pub type ObjectStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + Sync>>;

/// A body as stored: its size, MD5 and where its bytes went.
pub(super) struct StoredBody {
    pub size_bytes: u64,
    pub md5: [u8; 16],
    pub body: ObjectBody,
}

impl ObjectStore {
    /// Waits for one of the store's chunk-write slots.
    async fn chunk_write_slot(&self) -> ObjectResult<tokio::sync::OwnedSemaphorePermit> {
        self.chunk_writes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ObjectError::Unavailable("the object store is shutting down".into()))
    }

    /// Reads a body to its end (at most `size_bytes_max`), storing it inline (when
    /// `allow_inline` and small) or as chunks, each chunk with its reference by `holder`.
    pub(super) async fn store_body<S, E>(
        &self,
        body: S,
        allow_inline: bool,
        size_bytes_max: u64,
        holder: &ChunkHolder,
    ) -> ObjectResult<StoredBody>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut md5 = md5::Md5::new();
        let mut size_bytes = 0u64;
        let mut buffer: Vec<u8> = Vec::new();
        let mut chunks: Vec<ChunkRef> = Vec::new();
        // Each write runs as its own task, so it progresses (and frees its slot) while this
        // request waits for the next slot.
        // The chunk and its reference are written together; the id hashed here is the only
        // hash this node makes of the chunk.
        let put = |node: Arc<Node>, id: [u8; 32], data: Vec<u8>, slot: tokio::sync::OwnedSemaphorePermit| {
            let holder = holder.clone();
            let write = tokio::spawn(async move {
                let r = node
                    .put_chunk_with_ref(chunkstore::ChunkId(id), Bytes::from(data), &holder)
                    .await;
                drop(slot);
                r
            });
            async move { write.await.map_err(NodeError::from)? }
        };
        let mut writes = futures::stream::FuturesOrdered::new();
        let mut stream = std::pin::pin!(body);
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| ObjectError::IncompleteBody(format!("reading the body: {e}")))?;
            size_bytes += piece.len() as u64;
            if size_bytes > size_bytes_max {
                return Err(ObjectError::EntityTooLarge(format!(
                    "the body is larger than {size_bytes_max} bytes"
                )));
            }
            md5.update(&piece);
            let mut rest: &[u8] = &piece;
            while !rest.is_empty() {
                let take = rest.len().min(CHUNK_SIZE_BYTES - buffer.len());
                buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buffer.len() == CHUNK_SIZE_BYTES {
                    let data = std::mem::take(&mut buffer);
                    let id = chunkstore::ChunkId::of(&data).0;
                    chunks.push(ChunkRef {
                        id,
                        size_bytes: data.len() as u32,
                    });
                    let slot = self.chunk_write_slot().await?;
                    writes.push_back(put(self.node.clone(), id, data, slot));
                    // Bounded memory: wait for the oldest write when too many are in flight.
                    while writes.len() >= CHUNKS_IN_FLIGHT_MAX {
                        if let Some(r) = writes.next().await {
                            r?;
                        }
                    }
                }
            }
        }
        let md5: [u8; 16] = md5.finalize().into();
        if allow_inline && chunks.is_empty() && buffer.len() <= INLINE_SIZE_BYTES_MAX {
            return Ok(StoredBody {
                size_bytes,
                md5,
                body: ObjectBody::Inline(buffer),
            });
        }
        if !buffer.is_empty() {
            let id = chunkstore::ChunkId::of(&buffer).0;
            chunks.push(ChunkRef {
                id,
                size_bytes: buffer.len() as u32,
            });
            let slot = self.chunk_write_slot().await?;
            writes.push_back(put(self.node.clone(), id, buffer, slot));
        }
        while let Some(r) = writes.next().await {
            r?;
        }
        Ok(StoredBody {
            size_bytes,
            md5,
            body: ObjectBody::Chunks(chunks),
        })
    }

    /// The bytes `range` of an object as a stream, chunks fetched ahead and verified. The
    /// range must lie within the object (callers check it against `meta.size_bytes`).
    pub fn body_stream(&self, meta: &ObjectMeta, range: std::ops::Range<u64>) -> ObjectStream {
        debug_assert!(range.start <= range.end && range.end <= meta.size_bytes);
        match &meta.body {
            ObjectBody::Inline(data) => {
                let from = usize::try_from(range.start).unwrap_or(usize::MAX).min(data.len());
                let to = usize::try_from(range.end)
                    .unwrap_or(usize::MAX)
                    .min(data.len())
                    .max(from);
                let bytes = Bytes::copy_from_slice(&data[from..to]);
                Box::pin(futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) }))
            }
            ObjectBody::Chunks(chunks) => {
                // (chunk, first and end byte wanted within it)
                let mut offset = 0u64;
                let mut wanted = Vec::new();
                for c in chunks {
                    let end = offset + u64::from(c.size_bytes);
                    if end > range.start && offset < range.end {
                        let from = range.start.saturating_sub(offset) as usize;
                        let to = (range.end.min(end) - offset) as usize;
                        wanted.push((*c, from, to));
                    }
                    offset = end;
                }
                let node = self.node.clone();
                let stream = futures::stream::iter(wanted)
                    .map(move |(c, from, to)| {
                        let node = node.clone();
                        async move {
                            let id = chunkstore::ChunkId(c.id);
                            match node.get_chunk(&id).await {
                                Ok(Some(data)) if data.len() == c.size_bytes as usize => Ok(data.slice(from..to)),
                                Ok(_) => Err(std::io::Error::other(format!("chunk {id} is missing"))),
                                Err(e) => Err(std::io::Error::other(format!("chunk {id}: {e}"))),
                            }
                        }
                    })
                    .buffered(CHUNKS_PREFETCH + 1);
                Box::pin(stream)
            }
        }
    }
}
