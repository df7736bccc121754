//! A raw HTTP/2 client, frame by frame over TCP: for clients that break
//! the rules a real client library keeps for them (never acking a PING,
//! granting no flow-control window). Headers are sent as HPACK literals,
//! never indexed; what the server sends is read as frames, not decoded.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// `SETTINGS_INITIAL_WINDOW_SIZE`.
pub const INITIAL_WINDOW_SIZE: u16 = 0x4;

/// One frame the server sent.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// A prior-knowledge (h2c) connection driven by hand.
#[derive(Debug)]
pub struct RawH2 {
    stream: TcpStream,
}

impl RawH2 {
    /// Connects, sends the preface and a SETTINGS frame with `settings`.
    pub async fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        frame(&mut out, SETTINGS, 0, 0, &payload);
        stream.write_all(&out).await.unwrap();
        Self { stream }
    }

    /// Sends a whole request head (END_STREAM: no body) on stream `id`:
    /// `method` `path` to `authority`, with `headers` (lower-case names).
    pub async fn request(
        &mut self,
        id: u32,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) {
        let head = [method, authority, path];
        self.head(id, END_STREAM | END_HEADERS, head, headers).await;
    }

    /// Sends a request head without END_STREAM (a body follows).
    pub async fn request_with_body(
        &mut self,
        id: u32,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) {
        self.head(id, END_HEADERS, [method, authority, path], headers)
            .await;
    }

    /// A HEADERS frame with `flags`: `[method, authority, path]` and
    /// `headers`.
    async fn head(&mut self, id: u32, flags: u8, head: [&str; 3], headers: &[(&str, &str)]) {
        let [method, authority, path] = head;
        let mut block = Vec::new();
        for (name, value) in [
            (":method", method),
            (":scheme", "http"),
            (":authority", authority),
            (":path", path),
        ]
        .into_iter()
        .chain(headers.iter().copied())
        {
            literal(&mut block, name, value);
        }
        let mut out = Vec::new();
        frame(&mut out, HEADERS, flags, id, &block);
        self.stream.write_all(&out).await.unwrap();
    }

    /// Sends a DATA frame on stream `id`; false when the server has gone.
    pub async fn data(&mut self, id: u32, bytes: &[u8], end: bool) -> bool {
        let mut out = Vec::new();
        frame(&mut out, DATA, if end { END_STREAM } else { 0 }, id, bytes);
        self.stream.write_all(&out).await.is_ok()
    }

    /// Grants `increment` more bytes of window to stream `id` (0: the
    /// connection).
    pub async fn window_update(&mut self, id: u32, increment: u32) {
        let mut out = Vec::new();
        frame(&mut out, WINDOW_UPDATE, 0, id, &increment.to_be_bytes());
        self.stream.write_all(&out).await.unwrap();
    }

    /// Acknowledges the server's SETTINGS (a PING is never answered).
    pub async fn ack_settings(&mut self) {
        let mut out = Vec::new();
        frame(&mut out, SETTINGS, ACK, 0, &[]);
        let _ = self.stream.write_all(&out).await;
    }

    /// The next frame, or `None` once the server has closed the connection
    /// (or reset it). Waits at most `within`; panics beyond.
    pub async fn next(&mut self, within: Duration) -> Option<RawFrame> {
        tokio::time::timeout(within, self.read_frame())
            .await
            .expect("a frame or the end of the connection in time")
    }

    /// Reads frames, acking SETTINGS and ignoring PINGs, until `until`
    /// says a frame is the one awaited (returned) or the connection ends
    /// (`None`). Panics after `within`.
    pub async fn until(
        &mut self,
        within: Duration,
        mut until: impl FnMut(&RawFrame) -> bool,
    ) -> Option<RawFrame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.next(left).await?;
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                self.ack_settings().await;
            }
            if until(&f) {
                return Some(f);
            }
        }
    }

    async fn read_frame(&mut self) -> Option<RawFrame> {
        let mut head = [0u8; 9];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some(RawFrame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK "literal header field without indexing — new name".
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    for s in [name, value] {
        integer(out, 7, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), no flag bits.
fn integer(out: &mut Vec<u8>, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(u8::try_from(v).unwrap());
        return;
    }
    out.push(u8::try_from(max).unwrap());
    v -= max;
    while v >= 128 {
        out.push(u8::try_from(v % 128 + 128).unwrap());
        v /= 128;
    }
    out.push(u8::try_from(v).unwrap());
}
