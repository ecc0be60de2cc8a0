//! `--prometheus ADDR`: serves the latest metrics page (see [`super::prometheus`]) over plain
//! HTTP, so a fleet can scrape memtrace running as a DaemonSet.
//!
//! The session renders a fresh page once per sample and publishes it through a watch channel;
//! the server only ever hands out the latest page, a shared `Bytes` (no copy per scrape). So a
//! slow or stuck scraper never holds up the session, and scrapes never see a half-updated set
//! of counters.
//!
//! A hostile or broken client costs little: a request must arrive whole, small, within
//! [`REQUEST_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are served at once; one past that is
//! answered `503` as soon as its request is in (within [`BUSY_TIMEOUT`]), and past twice the
//! cap closed unanswered.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

/// A request must arrive whole within this; then the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests larger than this are not scrapes.
const MAX_REQUEST_BYTES: usize = 8 << 10;
/// Connections served at once (a few Prometheus servers scrape a node; more is a client that
/// opens connections and sends nothing).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection past the cap may take to send its request before it is closed.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// The answer to a connection past [`MAX_CONNECTIONS`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 29\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections at once\n";

/// A bound listener, ready to serve once tracing starts.
pub struct Exporter {
    listener: TcpListener,
    page: watch::Sender<Bytes>,
}

impl Exporter {
    /// Binds before any eBPF is loaded, so a port in use is a clean one-line error.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for --prometheus"))?;
        let (page, _) = watch::channel(Bytes::new());
        Ok(Self { listener, page })
    }

    /// Serves the latest published page from now on; returns the handle to publish pages.
    pub fn start(self) -> watch::Sender<Bytes> {
        let pages = self.page.subscribe();
        tokio::spawn(serve(self.listener, pages));
        self.page
    }
}

async fn serve(listener: TcpListener, pages: watch::Receiver<Bytes>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let busy_slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Accept errors (e.g. out of fds) concern one connection; keep serving.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (reply, timeout, slot) = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => (Reply::Page(pages.borrow().clone()), REQUEST_TIMEOUT, slot),
            Err(_) => match Arc::clone(&busy_slots).try_acquire_owned() {
                Ok(slot) => (Reply::Busy, BUSY_TIMEOUT, slot),
                // Dropped: closed unanswered.
                Err(_) => continue,
            },
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, answer(stream, reply)).await;
            drop(slot);
        });
    }
}

/// Answers one HTTP/1.x request: the metrics for `GET /metrics` (or `/`, with or without a
/// query string, which is ignored), 404 otherwise; `HEAD` gets the same headers.
/// What a connection gets.
enum Reply {
    /// The answer to its request, from this page.
    Page(Bytes),
    /// [`BUSY`], whatever it asked: it is past the cap.
    Busy,
}

async fn answer(mut stream: TcpStream, reply: Reply) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST_BYTES {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    // The request is read before a 503 too: closing a socket with unread data sends a reset,
    // which may discard the answer before the client reads it.
    let page = match reply {
        Reply::Page(page) => page,
        Reply::Busy => {
            stream.write_all(BUSY).await?;
            return stream.shutdown().await;
        }
    };
    let (head, body) = response_for(&request, &page);
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// The response's status line and headers, and its body.
fn response_for(request: &[u8], page: &Bytes) -> (String, Bytes) {
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let method = words.next();
    let path = words
        .next()
        .and_then(|target| target.split(|&b| b == b'?').next());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET" | b"HEAD"), Some(b"/metrics" | b"/")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            page.clone(),
        ),
        (Some(b"GET" | b"HEAD"), _) => (
            "404 Not Found",
            "text/plain",
            Bytes::from_static(b"try /metrics\n"),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            Bytes::from_static(b"GET only\n"),
        ),
    };
    // HEAD: the headers GET would get, Content-Length included, and no body.
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let body = if method == Some(b"HEAD") {
        Bytes::new()
    } else {
        body
    };
    (head, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(request: &[u8], page: &str) -> String {
        let (head, body) = response_for(request, &Bytes::copy_from_slice(page.as_bytes()));
        head + &String::from_utf8_lossy(&body)
    }

    #[test]
    fn http_answers() {
        let ok = answer_to(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "m 1\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nm 1\n"));
        let head = answer_to(b"HEAD / HTTP/1.1\r\n\r\n", "m 1\n");
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));
        let query = answer_to(b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", "m 1\n");
        assert!(query.starts_with("HTTP/1.1 200 OK\r\n") && query.ends_with("m 1\n"));
        assert!(answer_to(b"GET /x?metrics HTTP/1.1\r\n\r\n", "").starts_with("HTTP/1.1 404"));
        let busy = String::from_utf8_lossy(BUSY);
        let (_, body) = busy.split_once("\r\n\r\n").unwrap();
        assert!(busy.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(answer_to(b"GET /x HTTP/1.1\r\n\r\n", "").starts_with("HTTP/1.1 404"));
        assert!(answer_to(b"POST / HTTP/1.1\r\n\r\n", "").starts_with("HTTP/1.1 405"));
        assert!(answer_to(b"", "").starts_with("HTTP/1.1 405"));
    }
}
