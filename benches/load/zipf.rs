//! The load harness's windowed client, for the cold-start measurement
//! (`run.py --misses`): keep-alive connections on one thread (as `wrk
//! -t1`), each sending `GET`s with a token drawn from a Zipf(s)
//! distribution over a token file (rank k = line k, the same draw as the
//! harness's wrk script), and per window (500 ms by default) what wrk
//! cannot tell apart: the latency of every answer (so a p99 per window),
//! the status classes, refused connections, errors by kind and by *when*,
//! and the distinct tokens answered.
//!
//! SIGUSR1 sets the mark (the harness sends it once the old gate has
//! exited, before the new one starts): from then on errors are counted on
//! the connections opened after it (the new gate's) apart from those on
//! older ones (the old gate's, at its shutdown), and distinct tokens are
//! counted from zero on the new connections only.
//!
//! `load-zipf URL TOKENS_FILE [--connections 50] [--seconds 60] [--zipf 1.1]
//! [--seed 42] [--window-ms 500]`; one JSON line per window on stdout when
//! it ends.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::HeaderValue;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request not answered within this is a timeout (as `wrk --timeout 5s`).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before connecting again after a refusal (wrk retries at once; this
/// keeps the refused gate's downtime from burning the client's core).
const RETRY: Duration = Duration::from_millis(5);

#[derive(Debug, Parser)]
struct Args {
    /// `http://host:port/path`
    url: String,
    /// One token per line; line k is rank k of the distribution.
    tokens: String,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// The Zipf exponent s: P(rank k) ∝ k^-s.
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 500)]
    window_ms: u64,
}

/// Zipf(s) over ranks 0..n by inverse transform on the cumulative table.
#[derive(Debug)]
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut sum = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                sum += (k as f64).powf(-s);
                sum
            })
            .collect();
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut SplitMix) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// splitmix64: small, fast, good enough to draw ranks.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Errors by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Errors {
    /// A connection attempt that failed other than by refusal.
    connect: u64,
    /// The request was sent and the connection failed before the answer.
    io: u64,
    /// No answer within [`TIMEOUT`].
    timeout: u64,
}

impl Errors {
    fn json(&self) -> String {
        format!(
            r#"{{"connect":{},"io":{},"timeout":{}}}"#,
            self.connect, self.io, self.timeout
        )
    }
}

#[derive(Debug, Default)]
struct Window {
    latencies_us: Vec<u32>,
    non2xx: u64,
    refused: u64,
    /// On connections opened before the mark (the old gate's).
    errors_before: Errors,
    /// On connections opened after it (the new gate's).
    errors_after: Errors,
    /// Tokens answered for the first time since the mark, on new connections.
    new_distinct: u64,
    /// Answers on connections opened after the mark.
    answered_after: u64,
}

#[derive(Debug)]
struct Stats {
    started: Instant,
    window: Duration,
    windows: Vec<Window>,
    /// Bumped by the mark; a connection remembers the epoch it opened in.
    epoch: u32,
    mark_ms: Option<u128>,
    /// Ranks answered since the mark.
    seen: Vec<bool>,
}

impl Stats {
    fn now(&mut self) -> &mut Window {
        let i = (self.started.elapsed().as_millis() / self.window.as_millis()) as usize;
        if self.windows.len() <= i {
            self.windows.resize_with(i + 1, Window::default);
        }
        &mut self.windows[i]
    }

    fn errors(&mut self, epoch: u32) -> &mut Errors {
        let after = epoch == self.epoch && self.mark_ms.is_some();
        let w = self.now();
        if after {
            &mut w.errors_after
        } else {
            &mut w.errors_before
        }
    }
}

fn lock(stats: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

/// How one request ended.
enum Ended {
    /// With its status, and whether the server closes the connection.
    Answered(http::StatusCode, bool),
    /// The connection closed before this request was written: not an error
    /// of the request (wrk reconnects the same way).
    Unsent,
    Failed,
    TimedOut,
}

async fn one_request(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    req: http::Request<Empty<Bytes>>,
) -> Ended {
    let work = async {
        if send.ready().await.is_err() {
            return Ended::Unsent;
        }
        match send.send_request(req).await {
            Ok(res) => {
                let status = res.status();
                let close = res
                    .headers()
                    .get(http::header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                match res.into_body().collect().await {
                    Ok(_) => Ended::Answered(status, close),
                    Err(_) => Ended::Failed,
                }
            }
            Err(e) if e.is_canceled() => Ended::Unsent,
            Err(_) => Ended::Failed,
        }
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .unwrap_or(Ended::TimedOut)
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: SocketAddr,
    host: HeaderValue,
    path: Arc<str>,
    tokens: Arc<Vec<HeaderValue>>,
    zipf: Arc<Zipf>,
    mut rng: SplitMix,
    stats: Arc<Mutex<Stats>>,
    until: Instant,
) {
    while Instant::now() < until {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                {
                    let mut s = lock(&stats);
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        s.now().refused += 1;
                    } else {
                        let epoch = s.epoch;
                        s.errors(epoch).connect += 1;
                    }
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let epoch = lock(&stats).epoch;
        let Ok((mut send, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            lock(&stats).errors(epoch).connect += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let rank = zipf.sample(&mut rng);
            let Ok(req) = http::Request::get(&*path)
                .header(http::header::HOST, host.clone())
                .header(http::header::AUTHORIZATION, tokens[rank].clone())
                .body(Empty::<Bytes>::new())
            else {
                return;
            };
            let start = Instant::now();
            let sent = one_request(&mut send, req).await;
            let took = start.elapsed();
            let mut s = lock(&stats);
            match sent {
                Ended::Answered(status, close) => {
                    let counted = epoch == s.epoch && s.mark_ms.is_some();
                    let first = counted && !std::mem::replace(&mut s.seen[rank], true);
                    let w = s.now();
                    w.latencies_us
                        .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    if !status.is_success() {
                        w.non2xx += 1;
                    }
                    if counted {
                        w.answered_after += 1;
                        w.new_distinct += u64::from(first);
                    }
                    if close {
                        break;
                    }
                }
                Ended::Unsent => break,
                Ended::Failed => {
                    s.errors(epoch).io += 1;
                    break;
                }
                Ended::TimedOut => {
                    s.errors(epoch).timeout += 1;
                    break;
                }
            }
        }
    }
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = Args::parse();
    let uri: http::Uri = args.url.parse().expect("URL");
    let authority = uri.authority().expect("URL with host:port").clone();
    let addr: SocketAddr = authority.as_str().parse().expect("URL with an IP:port");
    let host = HeaderValue::from_str(authority.as_str()).expect("host");
    let path: Arc<str> = uri.path_and_query().map_or("/", |p| p.as_str()).into();
    let file = std::fs::File::open(&args.tokens).expect("tokens file");
    let tokens: Vec<HeaderValue> = std::io::BufReader::new(file)
        .lines()
        .map(|l| HeaderValue::from_str(&format!("Bearer {}", l.expect("line"))).expect("token"))
        .collect();
    assert!(!tokens.is_empty(), "no tokens in {}", args.tokens);
    let zipf = Arc::new(Zipf::new(tokens.len(), args.zipf));
    let tokens = Arc::new(tokens);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let stats = Arc::new(Mutex::new(Stats {
        started: Instant::now(),
        window: Duration::from_millis(args.window_ms.max(1)),
        windows: Vec::new(),
        epoch: 0,
        mark_ms: None,
        seen: vec![false; tokens.len()],
    }));
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    rt.block_on(async {
        let mark_stats = stats.clone();
        tokio::spawn(async move {
            let Ok(mut usr1) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            else {
                return;
            };
            while usr1.recv().await.is_some() {
                let mut s = lock(&mark_stats);
                s.epoch += 1;
                s.mark_ms = Some(s.started.elapsed().as_millis());
                s.seen.iter_mut().for_each(|b| *b = false);
            }
        });
        let mut seeder = SplitMix(args.seed);
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| {
                tokio::spawn(connection(
                    addr,
                    host.clone(),
                    path.clone(),
                    tokens.clone(),
                    zipf.clone(),
                    SplitMix(seeder.next()),
                    stats.clone(),
                    until,
                ))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });

    let mut s = lock(&stats);
    let window_ms = s.window.as_millis();
    let mark_ms = s.mark_ms;
    let mut distinct = 0;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, w) in s.windows.iter_mut().enumerate() {
        use std::io::Write;
        w.latencies_us.sort_unstable();
        distinct += w.new_distinct;
        let t_ms = i as u128 * window_ms;
        let _ = writeln!(
            out,
            r#"{{"t_ms":{t_ms},"unix_ms":{},"answered":{},"non2xx":{},"p50_us":{},"p99_us":{},"max_us":{},"refused":{},"errors_before_mark":{},"errors_after_mark":{},"answered_after_mark":{},"distinct_after_mark":{distinct},"mark":{}}}"#,
            started_unix_ms + t_ms,
            w.latencies_us.len(),
            w.non2xx,
            percentile(&w.latencies_us, 0.5),
            percentile(&w.latencies_us, 0.99),
            w.latencies_us.last().copied().unwrap_or(0),
            w.refused,
            w.errors_before.json(),
            w.errors_after.json(),
            w.answered_after,
            mark_ms.is_some_and(|m| m >= t_ms && m < t_ms + window_ms),
        );
    }
}
