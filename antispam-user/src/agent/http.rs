//! The agent's HTTP endpoint: `/metrics` for Prometheus, `/status` (JSON) for `antispam status`.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::watch,
};

use super::{metrics, state::Shared, status};

/// The pause after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

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
        "/status" => reply(StatusCode::OK, "application/json", status::render(&shared)),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><h1>antispam</h1><p><a href=\"/metrics\">metrics</a> <a href=\"/status\">status</a></p></body></html>\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /status\n"),
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
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(shared.clone(), req));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    log::debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok((local, task))
}
