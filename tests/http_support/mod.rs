//! Shared helpers of the HTTP tests: a server on `127.0.0.1:0` running
//! `tracepool::http::serve_with_shutdown` on its own runtime, and a small blocking
//! HTTP/1.1 client over `std::net::TcpStream` (with an incremental SSE
//! reader), so the tests need no HTTP client crate.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tracepool::Engine;
use tracepool::http::{HttpCounters, HttpOptions};

/// How long any single read may block before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server; dropping it shuts it down.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Engine,
    /// The HTTP counters of this server.
    pub counters: HttpCounters,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
    done: Option<std::sync::mpsc::Receiver<std::io::Result<()>>>,
}

impl Server {
    pub fn start(engine: Engine) -> Server {
        Server::start_with(engine, HttpOptions::default())
    }

    pub fn start_with(engine: Engine, opts: HttpOptions) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let counters = opts.counters();
        let e = engine.clone();
        rt.spawn(async move {
            let r = tracepool::http::serve_with_shutdown(listener, e, opts, async move {
                let _ = stopped.await;
            })
            .await;
            let _ = done_tx.send(r);
        });
        Server {
            addr,
            engine,
            counters,
            stop: Some(stop),
            rt: Some(rt),
            done: Some(done),
        }
    }

    /// Fires the shutdown signal and waits for `serve` to return.
    pub fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.done.take() {
            Some(done) => done
                .recv_timeout(Duration::from_secs(10))
                .expect("serve returns after the shutdown signal"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A complete (non-streaming) response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> BufReader<TcpStream> {
    connect_with(addr, "GET", path, headers)
}

fn connect_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send request");
    BufReader::new(s)
}

fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header");
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    (status, headers)
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    })
}

/// Reads one chunk; `None` at the terminal chunk.
fn read_chunk(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
    let mut data = vec![0; size];
    r.read_exact(&mut data)?;
    let mut crlf = [0; 2];
    r.read_exact(&mut crlf)?;
    if size == 0 {
        return Ok(None);
    }
    Ok(Some(data))
}

/// `GET path` and the whole response.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers)
}

/// `METHOD path` (no request body) and the whole response.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut r = connect_with(addr, method, path, headers);
    read_response(&mut r)
}

/// `GET path`, expecting an answer that is not an event stream (which
/// would never end): panics on one instead of hanging.
pub fn get_not_stream(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut r = connect(addr, path, headers);
    let (status, hdrs) = read_head(&mut r);
    let stream = hdrs
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("text/event-stream"));
    assert!(
        !stream,
        "{path}: expected an answer, got an event stream ({status})"
    );
    read_body(&mut r, status, hdrs)
}

/// Reads one whole response from `r`.
pub fn read_response(r: &mut BufReader<TcpStream>) -> Response {
    let (status, hdrs) = read_head(r);
    read_body(r, status, hdrs)
}

fn read_body(r: &mut BufReader<TcpStream>, status: u16, hdrs: Vec<(String, String)>) -> Response {
    let mut body = Vec::new();
    if status == 204 || status == 304 {
        // no body
    } else if is_chunked(&hdrs) {
        while let Some(c) = read_chunk(r).expect("chunk") {
            body.extend_from_slice(&c);
        }
    } else if let Some(len) = hdrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.resize(len, 0);
        r.read_exact(&mut body).expect("body");
    } else {
        r.read_to_end(&mut body).expect("body");
    }
    Response {
        status,
        headers: hdrs,
        body,
    }
}

/// One SSE message (a block of lines ended by a blank line).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    /// Data lines joined with `\n`; `None` for a block without data.
    pub data: Option<String>,
    pub comments: Vec<String>,
    /// The block exactly as received (without the final blank line).
    pub raw: String,
}

impl SseMessage {
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("message with a numeric id")
    }

    pub fn is_comment(&self) -> bool {
        self.data.is_none() && self.event.is_none() && self.id.is_none()
    }
}

/// An open event stream.
pub struct SseStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    buf: Vec<u8>,
    ended: bool,
}

impl SseStream {
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let mut reader = connect(addr, path, headers);
        let (status, hdrs) = read_head(&mut reader);
        let chunked = is_chunked(&hdrs);
        SseStream {
            status,
            headers: hdrs,
            reader,
            chunked,
            buf: Vec::new(),
            ended: status != 200,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn set_timeout(&self, d: Duration) {
        self.reader.get_ref().set_read_timeout(Some(d)).unwrap();
    }

    /// The next block, comments included; `None` when the response ended.
    /// Panics on a read timeout.
    pub fn next_block(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(block[..pos].to_vec()).expect("utf-8 message");
                return Some(parse_block(&text));
            }
            if self.ended {
                assert!(
                    self.buf.is_empty(),
                    "stream ended inside a message: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
            let more = if self.chunked {
                read_chunk(&mut self.reader).expect("read chunk")
            } else {
                let mut tmp = [0u8; 4096];
                match self.reader.read(&mut tmp).expect("read") {
                    0 => None,
                    n => Some(tmp[..n].to_vec()),
                }
            };
            match more {
                Some(data) => self.buf.extend_from_slice(&data),
                None => self.ended = true,
            }
        }
    }

    /// The next block that is not a comment.
    pub fn next_message(&mut self) -> Option<SseMessage> {
        loop {
            let b = self.next_block()?;
            if !b.is_comment() {
                return Some(b);
            }
        }
    }

    /// Every remaining non-comment message, until the response ends.
    pub fn collect_rest(&mut self) -> Vec<SseMessage> {
        let mut out = Vec::new();
        while let Some(m) = self.next_message() {
            out.push(m);
        }
        out
    }
}

fn parse_block(text: &str) -> SseMessage {
    let mut m = SseMessage {
        raw: text.to_owned(),
        ..SseMessage::default()
    };
    for line in text.split('\n') {
        if let Some(c) = line.strip_prefix(':') {
            m.comments.push(c.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => m.id = Some(value.to_owned()),
            "event" => m.event = Some(value.to_owned()),
            "data" => {
                m.data = Some(match m.data.take() {
                    Some(d) => format!("{d}\n{value}"),
                    None => value.to_owned(),
                })
            }
            _ => {}
        }
    }
    m
}

/// An engine for tests: memory driver, small pool.
pub fn engine() -> Engine {
    Engine::builder()
        .capacity(64)
        .workers(1)
        .memory()
        .build()
        .expect("engine")
}

/// Waits until `f` is true (polling), panicking after `secs`.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
