//! The HTTP/1.1 pool against a raw upstream that counts its connections:
//! reuse, concurrency, a connection the upstream closes, `max_idle`, the
//! idle timeout, a response not read to its end, and an upstream that
//! cannot be reached.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use http_body_util::{BodyExt, Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

type TestUpstream = Upstream<Empty<Bytes>>;

impl SendBody for Empty<Bytes> {
    fn empty() -> Option<Self> {
        Some(Empty::new())
    }
}

impl SendBody for Full<Bytes> {
    fn empty() -> Option<Self> {
        Some(Full::default())
    }
}

/// Connections the raw upstream accepted, and saw end.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    ended: AtomicUsize,
    /// Every request head received, in order.
    heads: std::sync::Mutex<Vec<String>>,
    /// Every request body received (by `content-length`), in order.
    bodies: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Counts {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

/// A keep-alive HTTP/1.1 upstream written by hand: `GET /ok` answers `ok`
/// (after reading a `content-length` body, if any); `POST /early` answers
/// `ok` first and reads the body after;
/// `GET /close` answers `ok` and closes the connection without saying so
/// first; `GET /endless` streams chunks until the client goes away;
/// `/stale` (any method) is answered `ok` as a connection's first request
/// and otherwise read whole and the connection closed without an answer
/// (an upstream whose keep-alive timeout fired as the request came);
/// `/gone` is always read and the connection closed.
async fn raw_upstream() -> (SocketAddr, Arc<Counts>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else {
                continue;
            };
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut answered = 0usize;
                'requests: loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'requests,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    c.heads.lock().unwrap().push(head.clone());
                    let length = head
                        .to_ascii_lowercase()
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(str::trim)
                                .map(str::to_owned)
                        })
                        .map_or(0, |n| n.parse::<usize>().unwrap());
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    // Answers before it reads the request's body (as an
                    // upstream refusing an upload early does), then reads it.
                    let early = head.starts_with("POST /early ");
                    if early && s.write_all(ok).await.is_err() {
                        break;
                    }
                    while buf.len() < length {
                        let mut chunk = [0u8; 1024];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'requests,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    c.bodies.lock().unwrap().push(buf.drain(..length).collect());
                    if early {
                        continue;
                    }
                    let path = head.split(' ').nth(1).unwrap_or_default();
                    if path == "/gone" || (path == "/stale" && answered > 0) {
                        break;
                    }
                    if head.starts_with("GET /endless ") {
                        let start = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                        if s.write_all(start).await.is_err() {
                            break;
                        }
                        while s.write_all(b"5\r\nchunk\r\n").await.is_ok() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        break;
                    }
                    if s.write_all(ok).await.is_err() || head.starts_with("GET /close ") {
                        break;
                    }
                    answered += 1;
                }
                c.ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

fn upstream<B: SendBody>(addr: SocketAddr, max_idle: usize, idle_timeout: Duration) -> Upstream<B> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_config(None).unwrap())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Upstream::new(Settings {
        scheme: Scheme::HTTP,
        authority: addr.to_string().parse().unwrap(),
        connector,
        idle_timeout,
        max_idle,
        http2: false,
        resent: Some(IntCounter::new("resent", "requests sent again").unwrap()),
    })
}

/// Sends `GET path` and reads the answer to its end.
async fn get(up: &TestUpstream, path: &'static str) -> Result<Bytes, Failed> {
    let res = up
        .send(
            Request::new(Empty::new()),
            PathAndQuery::from_static(path),
            Instant::now(),
        )
        .await?;
    assert_eq!(res.status(), 200);
    Ok(res.into_body().collect().await.unwrap().to_bytes())
}

/// Polls `check` every 10 ms until it holds, for at most `within`.
async fn until(what: &str, within: Duration, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn requests_one_after_another_share_one_connection() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 8, Duration::from_secs(90));
    for _ in 0..5 {
        assert_eq!(get(&up, "/ok").await.unwrap(), "ok");
    }
    assert_eq!(counts.accepted(), 1);
}

#[tokio::test]
async fn the_request_line_is_origin_form_and_a_missing_host_is_the_upstreams() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 8, Duration::from_secs(90));
    let res = up
        .send(
            Request::new(Empty::new()),
            PathAndQuery::from_static("/ok?a=1"),
            Instant::now(),
        )
        .await;
    assert!(res.is_ok());
    let mut with_host = Request::new(Empty::new());
    with_host
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_static("api.example"));
    up.send(with_host, PathAndQuery::from_static("/ok"), Instant::now())
        .await
        .unwrap();
    let heads = counts.heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with("GET /ok?a=1 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains(&format!("\r\nhost: {addr}\r\n")),
        "{}",
        heads[0]
    );
    assert!(
        heads[1]
            .to_ascii_lowercase()
            .contains("\r\nhost: api.example\r\n"),
        "the client's Host is kept: {}",
        heads[1]
    );
}

#[tokio::test]
async fn request_bodies_go_whole_and_their_connection_is_reused() {
    let (addr, counts) = raw_upstream().await;
    let up: Upstream<Full<Bytes>> = upstream(addr, 8, Duration::from_secs(90));
    for i in 0..3 {
        let body = format!("body number {i}").repeat(100);
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = http::Method::POST;
        let res = up
            .send(req, PathAndQuery::from_static("/ok"), Instant::now())
            .await
            .unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(counts.accepted(), 1);
    let bodies = counts.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(b, format!("body number {i}").repeat(100).as_bytes());
    }
}

/// A request body sent as its chunks come through a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl SendBody for ChannelBody {
    fn empty() -> Option<Self> {
        None
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn a_connection_answered_before_its_request_body_is_sent_is_not_reused_until_it_is() {
    let (addr, counts) = raw_upstream().await;
    let up: Upstream<ChannelBody> = upstream(addr, 8, Duration::from_secs(90));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = Request::new(ChannelBody(rx));
    *req.method_mut() = http::Method::POST;
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let res = up
        .send(req, PathAndQuery::from_static("/early"), Instant::now())
        .await
        .unwrap();
    // The whole answer read while half the body is still to come.
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");

    // Its connection is still sending: another request gets a new one.
    let (tx2, rx2) = tokio::sync::mpsc::channel(1);
    drop(tx2);
    let mut get = Request::new(ChannelBody(rx2));
    *get.uri_mut() = Uri::from_static("/ok");
    let res = up
        .send(get, PathAndQuery::from_static("/ok"), Instant::now())
        .await
        .unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(counts.accepted(), 2, "not reused mid-body");

    // The body ends: the first connection goes back, framing intact.
    tx.send(Bytes::from_static(b"-last")).await.unwrap();
    drop(tx);
    until("both bodies received", Duration::from_secs(5), || {
        counts.bodies.lock().unwrap().len() == 2
    })
    .await;
    assert!(
        counts
            .bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b == b"first-last"),
        "the early-answered body arrived whole"
    );
    let Kind::Http1(pool) = &up.kind else {
        unreachable!("an HTTP/1.1 upstream")
    };
    until(
        "the first connection back in the pool",
        Duration::from_secs(5),
        || pool.idle().len() == 2,
    )
    .await;
    let empty = || {
        let (t, r) = tokio::sync::mpsc::channel(1);
        drop(t);
        Request::new(ChannelBody(r))
    };
    for _ in 0..2 {
        let (a, b) = tokio::join!(
            up.send(empty(), PathAndQuery::from_static("/ok"), Instant::now()),
            up.send(empty(), PathAndQuery::from_static("/ok"), Instant::now()),
        );
        for res in [a.unwrap(), b.unwrap()] {
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        }
    }
    assert_eq!(counts.accepted(), 2, "both kept and reused");
    assert!(
        counts.heads.lock().unwrap()[2..]
            .iter()
            .all(|h| h.starts_with("GET /ok HTTP/1.1\r\n")),
        "every later request framed on its own"
    );
}

#[tokio::test]
async fn concurrent_requests_open_a_connection_each_and_both_are_kept() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 8, Duration::from_secs(90));
    let (a, b) = tokio::join!(get(&up, "/ok"), get(&up, "/ok"));
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (Bytes::from("ok"), Bytes::from("ok"))
    );
    assert_eq!(counts.accepted(), 2);
    let (a, b) = tokio::join!(get(&up, "/ok"), get(&up, "/ok"));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(counts.accepted(), 2, "both connections were reused");
}

#[tokio::test]
async fn a_connection_the_upstream_closes_after_answering_costs_no_error() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 8, Duration::from_secs(90));
    for _ in 0..5 {
        assert_eq!(get(&up, "/close").await.unwrap(), "ok");
    }
    assert_eq!(counts.accepted(), 5, "a new connection for each");
}

/// Leaves the kept connection idle long enough to be one the upstream may
/// have closed unseen.
async fn idle() {
    tokio::time::sleep(SENT_AGAIN_AFTER).await;
}

/// What the pool of `up` counted as sent again.
fn resent<B: SendBody>(up: &Upstream<B>) -> u64 {
    let Kind::Http1(pool) = &up.kind else {
        unreachable!("an HTTP/1.1 upstream")
    };
    pool.resent.as_ref().map_or(0, IntCounter::get)
}

/// How many request heads for `path` the upstream received.
fn sent(counts: &Counts, path: &str) -> usize {
    let line = format!(" {path} HTTP/1.1\r\n");
    let heads = counts.heads.lock().unwrap();
    heads.iter().filter(|h| h.contains(&line)).count()
}

#[tokio::test]
async fn a_request_the_upstream_closes_a_kept_connection_on_is_sent_again_on_a_new_one() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 8, Duration::from_secs(90));
    for round in 1..=3 {
        assert_eq!(get(&up, "/ok").await.unwrap(), "ok");
        idle().await;
        // The kept connection is taken, the request written, the
        // connection closed unanswered: a new one answers.
        assert_eq!(get(&up, "/stale").await.unwrap(), "ok", "round {round}");
        assert_eq!(sent(&counts, "/stale"), 2 * round);
        assert_eq!(resent(&up), u64::try_from(round).unwrap(), "counted");
    }
    assert_eq!(counts.accepted(), 4, "one connection, then one per retry");
}

#[tokio::test]
async fn a_request_is_sent_again_at_most_once_and_never_from_a_new_connection() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 8, Duration::from_secs(90));
    get(&up, "/ok").await.unwrap();
    idle().await;
    // Closed unanswered on the kept connection, then on the new one.
    assert!(matches!(get(&up, "/gone").await, Err(Failed::Exchange(_))));
    assert_eq!(sent(&counts, "/gone"), 2);
    // No connection kept now: a new one fails, and is not tried again.
    assert!(matches!(get(&up, "/gone").await, Err(Failed::Exchange(_))));
    assert_eq!(sent(&counts, "/gone"), 3);
    assert_eq!(resent(&up), 1);
}

#[tokio::test]
async fn a_request_with_a_body_or_a_method_not_idempotent_is_never_sent_again() {
    let (addr, counts) = raw_upstream().await;
    let up: Upstream<Full<Bytes>> = upstream(addr, 8, Duration::from_secs(90));
    let send = |method: http::Method, path: &'static str, body: &'static str| {
        let mut req = Request::new(Full::new(Bytes::from_static(body.as_bytes())));
        *req.method_mut() = method;
        up.send(req, PathAndQuery::from_static(path), Instant::now())
    };
    let cases = [
        (http::Method::POST, ""),
        (http::Method::PATCH, ""),
        (http::Method::PUT, "a body"),
        (http::Method::DELETE, "a body"),
    ];
    for (i, (method, body)) in cases.into_iter().enumerate() {
        let res = send(http::Method::GET, "/ok", "").await.unwrap();
        res.into_body().collect().await.unwrap();
        idle().await;
        let failed = send(method.clone(), "/stale", body).await;
        assert!(
            matches!(failed, Err(Failed::Exchange(_))),
            "{method} with body {body:?}"
        );
        assert_eq!(sent(&counts, "/stale"), i + 1, "{method} sent once");
        assert_eq!(resent(&up), 0);
    }
    // The same methods' idempotent kin without a body are sent again.
    for method in [
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::OPTIONS,
    ] {
        let res = send(http::Method::GET, "/ok", "").await.unwrap();
        res.into_body().collect().await.unwrap();
        idle().await;
        let before = sent(&counts, "/stale");
        let res = send(method.clone(), "/stale", "").await;
        assert_eq!(
            res.map(|r| r.status()).ok(),
            Some(http::StatusCode::OK),
            "{method}"
        );
        assert_eq!(sent(&counts, "/stale"), before + 2, "{method} sent again");
    }
}

#[tokio::test]
async fn with_no_idle_connection_allowed_each_request_opens_one() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 0, Duration::from_secs(90));
    for _ in 0..3 {
        get(&up, "/ok").await.unwrap();
    }
    assert_eq!(counts.accepted(), 3);
    until(
        "the unkept connections closed",
        Duration::from_secs(5),
        || counts.ended() == 3,
    )
    .await;
}

#[tokio::test]
async fn a_zero_idle_timeout_keeps_no_connection() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 8, Duration::ZERO);
    for _ in 0..2 {
        get(&up, "/ok").await.unwrap();
    }
    assert_eq!(counts.accepted(), 2);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (addr, counts) = raw_upstream().await;
    let idle_timeout = Duration::from_millis(400);
    let up = upstream(addr, 8, idle_timeout);
    get(&up, "/ok").await.unwrap();
    let idle_from = Instant::now();
    until("the idle connection closed", Duration::from_secs(5), || {
        counts.ended() == 1
    })
    .await;
    let idle_for = idle_from.elapsed();
    // Closed between 7/8 of the timeout (swept by eighths) and a little
    // past it; only the lower bound is asserted (a busy machine is late).
    assert!(
        idle_for >= idle_timeout * 7 / 8,
        "closed after {idle_for:?}, idle timeout {idle_timeout:?}"
    );
    get(&up, "/ok").await.unwrap();
    assert_eq!(counts.accepted(), 2, "a new connection after the timeout");
}

#[tokio::test]
async fn a_response_dropped_before_its_end_closes_its_connection() {
    let (addr, counts) = raw_upstream().await;
    let up = upstream(addr, 8, Duration::from_secs(90));
    let res = up
        .send(
            Request::new(Empty::new()),
            PathAndQuery::from_static("/endless"),
            Instant::now(),
        )
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "chunk");
    drop(body);
    until(
        "the half-read connection closed",
        Duration::from_secs(5),
        || counts.ended() == 1,
    )
    .await;
    get(&up, "/ok").await.unwrap();
    assert_eq!(counts.accepted(), 2, "never reused mid-response");
}

#[tokio::test]
async fn an_upstream_that_cannot_be_reached_is_a_connect_failure() {
    // A port that was just free: nothing listens on it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let up = upstream(addr, 8, Duration::from_secs(90));
    assert!(matches!(get(&up, "/ok").await, Err(Failed::Connect(_))));
}
