//! The listener: hyper serves each connection with a deadline for every request head, and open
//! connections are bounded in all and per client address. A client that opens sockets and sends
//! nothing, or a header a byte at a time, would otherwise hold them for ever and, once the
//! process runs out of file descriptors, lock every other tenant out (security review S12).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a request head may take and how many connections may be open.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From the moment a connection waits for a request until its head has arrived (also
    /// bounds how long an idle keep-alive connection stays open).
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_per_client: usize,
}

/// Open connections, in all and by client address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A connection's place among the open ones, given back when it is dropped.
struct Place {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open connections");
        open.total -= 1;
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
        metrics::gauge!("reelsmith_http_connections_open").set(open.total as f64);
    }
}

/// A client's socket holding its place: the place is given back when the socket closes, also
/// after the connection was upgraded to a WebSocket (hyper hands this same stream over).
struct Counted {
    tcp: tokio::net::TcpStream,
    _place: Place,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A place for a new connection from `client`, or which limit it would pass.
fn admit(open: &Arc<Mutex<Open>>, client: IpAddr, limits: &ConnectionLimits) -> Result<Place, &'static str> {
    let mut o = open.lock().expect("open connections");
    if o.total >= limits.max_connections {
        return Err("server");
    }
    let n = o.by_client.entry(client).or_default();
    if *n >= limits.max_per_client {
        return Err("client");
    }
    *n += 1;
    o.total += 1;
    metrics::gauge!("reelsmith_http_connections_open").set(o.total as f64);
    Ok(Place { open: open.clone(), client })
}

/// Serves `app` on `listener` until `stop`, then lets open connections finish their requests
/// (the caller bounds how long; dropping this future closes them all).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken: try
                    // again shortly instead of spinning on the error.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let place = match admit(&open, peer.ip(), &limits) {
            Ok(place) => place,
            Err(limit) => {
                // Closed at once: no buffers, no task, nothing held for it.
                metrics::counter!("reelsmith_http_connections_refused_total", "limit" => limit).increment(1);
                tracing::debug!(%peer, limit, "connection refused: too many open");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = app.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let stop = stop.clone();
        let io = TokioIo::new(Counted { tcp, _place: place });
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let connection = http.serve_connection(io, TowerToHyperService::new(service)).with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(%peer, error = %e, "connection ended");
                    }
                    return;
                }
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            // The request in flight finishes; no new one is read.
            let _ = connection.await;
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Raises the soft limit on open files to the hard one, so the connection limits (and not the
/// process's file descriptors) decide when connections are refused.
pub fn raise_open_files_limit(wanted: usize) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    if (limit.rlim_cur as usize) < wanted {
        tracing::warn!(
            open_files = limit.rlim_cur,
            wanted,
            "the open-files limit is below max_connections plus room for files; raise `ulimit -n`"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_client_and_given_back() {
        let limits = ConnectionLimits { header_timeout: Duration::from_secs(1), max_connections: 3, max_per_client: 2 };
        let open = Arc::new(Mutex::new(Open::default()));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = admit(&open, a, &limits).unwrap();
        let _a2 = admit(&open, a, &limits).unwrap();
        assert_eq!(admit(&open, a, &limits).err(), Some("client"));
        let _b1 = admit(&open, b, &limits).unwrap();
        assert_eq!(admit(&open, b, &limits).err(), Some("server"));
        drop(a1);
        let _b2 = admit(&open, b, &limits).expect("a place given back is free again");
        drop(_b1);
        drop(_b2);
        drop(_a2);
        let o = open.lock().unwrap();
        assert_eq!((o.total, o.by_client.len()), (0, 0), "no client left behind: {o:?}");
    }
}
