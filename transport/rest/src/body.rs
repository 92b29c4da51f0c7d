//! Reading a request body, never more than `max_body_bytes` of it.
//!
//! The limit is checked twice: up front from `Content-Length` (and the body's size hint), so an
//! oversized upload is refused without reading it, and while reading (`http_body_util::Limited`),
//! so a chunked body or a lying client cannot make us buffer more.

use std::error::Error as StdError;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// It is longer than the limit (answered with `413`).
    TooLarge,
    /// Reading it failed (the client went away, or sent a malformed body): `400`.
    Unreadable(String),
}

/// The whole body, if it is at most `limit` bytes long.
pub(crate) async fn read<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit_u64) || body.size_hint().lower() > limit_u64 {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(error) => Err(BodyError::Unreadable(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::Full;
    use hyper::body::Frame;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn within_and_over_the_limit() {
        let headers = HeaderMap::new();
        let body = |n: usize| Full::new(Bytes::from(vec![b'x'; n]));
        assert_eq!(
            block_on(read(&headers, body(10), 10)).expect("fits").len(),
            10
        );
        assert!(matches!(
            block_on(read(&headers, body(11), 10)),
            Err(BodyError::TooLarge)
        ));
    }

    #[test]
    fn declared_length_is_checked_up_front() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("1000"));
        let empty = Full::new(Bytes::new());
        assert!(matches!(
            block_on(read(&headers, empty, 10)),
            Err(BodyError::TooLarge)
        ));
    }

    #[test]
    fn streamed_body_is_cut_off() {
        let chunks = (0..100).map(|_| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"0123456789")))
        });
        let body = iter_body(chunks);
        assert!(matches!(
            block_on(read(&HeaderMap::new(), body, 50)),
            Err(BodyError::TooLarge)
        ));
    }

    /// A body that yields the iterator's frames, without a size hint (like a chunked upload).
    fn iter_body<I>(iter: I) -> impl Body<Data = Bytes, Error = std::convert::Infallible>
    where
        I: Iterator<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Unpin,
    {
        struct IterBody<I>(I);
        impl<I> Body for IterBody<I>
        where
            I: Iterator<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Unpin,
        {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                std::task::Poll::Ready(self.0.next())
            }
        }
        IterBody(iter)
    }
}
