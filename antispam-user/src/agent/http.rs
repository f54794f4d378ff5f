//! The agent's HTTP endpoint: `/metrics` for Prometheus and `/healthz` for probes. Every local
//! user can reach it, so it serves nothing private (the status, with user names, suspensions
//! and who set them, is on the control socket only), and it cannot be used to exhaust the agent:
//! at most [`MAX_CONNECTIONS`] at once (more are closed at once), request headers within
//! [`HEADER_TIMEOUT`], a connection at most [`CONNECTION_LIFETIME`].

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::{watch, Semaphore},
};

use super::{metrics, state::Shared};

/// The pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections served at once; Prometheus needs one or two.
pub const MAX_CONNECTIONS: usize = 32;
/// A client has this long to send its request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever it is doing (keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n",
        ));
    }
    let path = req.uri().path().to_string();
    // Reading the maps is blocking syscalls: keep them off the async workers.
    let r = tokio::task::spawn_blocking(move || match path.as_str() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics::render(&shared)),
        "/healthz" => health(&shared),
        "/status" => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the status is served on the control socket only (it names users and operators): run `antispam status`\n",
        ),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><h1>antispam</h1><p><a href=\"/metrics\">metrics</a> <a href=\"/healthz\">healthz</a></p></body></html>\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n"),
    })
    .await;
    Ok(r.unwrap_or_else(|e| {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        )
    }))
}

/// `/healthz`: 200 while the programs are attached and a policy is in force, else 503; for
/// readiness and liveness probes. Says nothing private.
fn health(shared: &Shared) -> Response<Full<Bytes>> {
    let generation = shared.generation.load(std::sync::atomic::Ordering::Relaxed);
    if shared.programs_attached > 0 && generation > 0 {
        reply(
            StatusCode::OK,
            "text/plain",
            format!("enforcing (policy generation {generation})\n"),
        )
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not enforcing\n",
        )
    }
}

/// Binds `addr`, before anything touches the kernel: a port someone else holds stops the start
/// there (saying who holds it, where /proc tells), rather than after the programs are attached.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, super::Error> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    let bound = socket.and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        s.listen(1024)
    });
    bound.map_err(|source| {
        let holders = if source.kind() == std::io::ErrorKind::AddrInUse {
            crate::sys::ports::listeners(addr.port())
        } else {
            Vec::new()
        };
        super::Error::MetricsPort {
            addr,
            source,
            holders,
        }
    })
}

/// Serves on the listener `bind` made; returns the bound address and the serving task.
pub fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut errors = super::log_limit::LogLimit::default();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            errors.flush();
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors, say: not a busy loop, not a line per attempt.
                        errors.error("metrics accept", format!("metrics accept: {e}"));
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Full: this one is closed at once (a scraper retries; a flood gains nothing).
                shared
                    .counters
                    .http_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(stream);
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(shared.clone(), req));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                // Err(elapsed): the lifetime is up; the connection closes as it drops.
                if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                    log::debug!("metrics connection: {e}");
                }
                drop(slot);
            });
        }
    });
    Ok((local, task))
}
