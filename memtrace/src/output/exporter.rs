//! `--prometheus ADDR`: serves the latest metrics page (see [`super::prometheus`]) over plain
//! HTTP, so a fleet can scrape memtrace running as a DaemonSet.
//!
//! The session renders a fresh page once per sample and publishes it through a watch channel;
//! the server only ever hands out the latest page, a shared `Bytes` (no copy per scrape). So a
//! slow or stuck scraper never holds up the session, and scrapes never see a half-updated set
//! of counters.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A request must arrive whole within this; then the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests larger than this are not scrapes.
const MAX_REQUEST_BYTES: usize = 8 << 10;

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
    loop {
        // Accept errors (e.g. out of fds) concern one connection; keep serving.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let page = pages.borrow().clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, page)).await;
        });
    }
}

/// Answers one HTTP/1.x request: the metrics for `GET /metrics` (or `/`), 404 otherwise.
async fn answer(mut stream: TcpStream, page: Bytes) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST_BYTES {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let (head, body) = response_for(&request, &page);
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// The response's status line and headers, and its body.
fn response_for(request: &[u8], page: &Bytes) -> (String, Bytes) {
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next(), words.next());
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
    let body = if method == Some(b"HEAD") {
        Bytes::new()
    } else {
        body
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
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
        assert!(head.contains("Content-Length: 0") && head.ends_with("\r\n\r\n"));
        assert!(answer_to(b"GET /x HTTP/1.1\r\n\r\n", "").starts_with("HTTP/1.1 404"));
        assert!(answer_to(b"POST / HTTP/1.1\r\n\r\n", "").starts_with("HTTP/1.1 405"));
        assert!(answer_to(b"", "").starts_with("HTTP/1.1 405"));
    }
}
