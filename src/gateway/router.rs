//! Services mounted in-process at path prefixes, chosen before anything goes upstream.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt as _, Either};
use hyper::body::Incoming;
use tower_service::Service;

use super::GatewayBody;
use crate::paths::is_under;
use crate::{BoxError, BoxFuture};

/// Answers one request with a mounted service (a fresh clone of it, as Tower expects).
type MountedCall =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<GatewayBody>> + Send + Sync>;

/// A service answering every request under `prefix` in-process.
#[derive(Clone)]
pub(super) struct Mount {
    prefix: String,
    call: MountedCall,
}

impl Mount {
    /// `service` at `prefix`, stripped of a trailing `/`.
    ///
    /// # Panics
    ///
    /// If `prefix` does not start with `/` or is the root: prefixes are configuration, and
    /// every builder that mounts states them through here.
    pub(super) fn new<S, B>(prefix: &str, service: S) -> Self
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let prefix = prefix.trim_end_matches('/');
        assert!(
            prefix.starts_with('/'),
            "a mount prefix starts with '/' and is not the root"
        );
        let call: MountedCall = Arc::new(move |request| {
            let mut service = service.clone();
            Box::pin(async move {
                let Ok(()) = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
                let Ok(response) = service.call(request).await;
                response.map(|body| Either::Right(body.map_err(Into::into).boxed_unsync()))
            })
        });
        Self {
            prefix: prefix.to_owned(),
            call,
        }
    }

    pub(super) async fn call(&self, request: Request<Incoming>) -> Response<GatewayBody> {
        (self.call)(request).await
    }
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The mounted service for `path`, if any: the one with the longest prefix.
pub(super) fn mounted<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|mount| is_under(path, &mount.prefix))
        .max_by_key(|mount| mount.prefix.len())
}
