use super::*;
use http_body_util::BodyExt;
use http_body_util::StreamBody;

type Chunks = tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>;

/// A body fed by the test, one chunk at a time.
fn fed(rx: Chunks) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
    StreamBody::new(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|v| (v, rx)) },
    )))
}

fn limits(read_ms: u64, min_rate: u64, grace_ms: u64) -> BodyLimits {
    BodyLimits {
        read_timeout: Duration::from_millis(read_ms),
        min_rate,
        grace: Duration::from_millis(grace_ms),
        whole: None,
    }
}

fn counter() -> IntCounter {
    IntCounter::new("cut", "cut").unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_coming_is_cut_after_the_read_timeout() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let refused = counter();
    let (mut body, cut) = TimedBody::new(fed(rx), limits(300, 0, 100), &refused, "test");
    let cut = cut.unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"{"))))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_ok());
    let start = Instant::now();
    let err = body.frame().await.unwrap().unwrap_err();
    assert!(is_body_timeout(&*err), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(cut.load(Ordering::Acquire));
    assert_eq!(refused.get(), 1);
    // Polled again, it stays cut, and is counted once.
    assert!(body.frame().await.unwrap().is_err());
    assert_eq!(refused.get(), 1);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_steady_body_within_the_limits_is_read_whole() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let refused = counter();
    // 2 KiB every 200 ms: 10 KiB/s, above 1 KiB/s, never a 300 ms gap.
    let (body, cut) = TimedBody::new(fed(rx), limits(300, 1024, 500), &refused, "test");
    tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Ok(Frame::data(Bytes::from(vec![b' '; 2048]))))
                .await
                .unwrap();
        }
    });
    let whole = body.collect().await.unwrap().to_bytes();
    assert_eq!(whole.len(), 20 * 2048);
    assert!(!cut.unwrap().load(Ordering::Acquire));
    assert_eq!(refused.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_under_the_minimum_rate_is_cut_once_the_grace_is_spent() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let refused = counter();
    // 100 bytes every 200 ms: 500 B/s, under 1 KiB/s; no gap of 300 ms.
    let (body, cut) = TimedBody::new(fed(rx), limits(300, 1024, 1000), &refused, "test");
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tx
                .send(Ok(Frame::data(Bytes::from(vec![b' '; 100]))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let start = Instant::now();
    let err = body.collect().await.unwrap_err();
    assert!(is_body_timeout(&*err), "{err}");
    // Past the grace; cut as soon as 500 B/s shows (no later than when
    // 1 KiB/s would have sent what came: ~1.2 s).
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took <= Duration::from_millis(1400), "{took:?}");
    assert!(cut.unwrap().load(Ordering::Acquire));
}

#[tokio::test(start_paused = true)]
async fn a_fast_start_does_not_pay_for_a_trickle_after_it() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let refused = counter();
    // 200 KiB at once (200 s at 1 KiB/s), then a byte every 300 ms: each
    // wait under the 1 s read timeout, far under the rate.
    let (mut body, _cut) = TimedBody::new(fed(rx), limits(1000, 1024, 500), &refused, "test");
    tx.send(Ok(Frame::data(Bytes::from(vec![b' '; 200 * 1024]))))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_ok());
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if tx
                .send(Ok(Frame::data(Bytes::from_static(b" "))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let start = Instant::now();
    let err = body.collect().await.unwrap_err();
    assert!(is_body_timeout(&*err), "{err}");
    // What the burst earned runs at most the read timeout ahead.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took <= Duration::from_millis(1400), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_whole_message_must_come_within_its_waiting() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let refused = counter();
    // 2 KiB every 200 ms is fast enough for the rate and the read
    // timeout, but the whole body may take only 1 s of waiting.
    let limits = BodyLimits {
        whole: Some(Duration::from_millis(1000)),
        ..limits(300, 1024, 500)
    };
    let (body, _cut) = TimedBody::new(fed(rx), limits, &refused, "test");
    tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tx
                .send(Ok(Frame::data(Bytes::from(vec![b' '; 2048]))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let start = Instant::now();
    let err = body.collect().await.unwrap_err();
    assert!(is_body_timeout(&*err), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
}

#[tokio::test(start_paused = true)]
async fn time_the_reader_spends_elsewhere_is_not_the_clients() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let refused = counter();
    let (mut body, _cut) = TimedBody::new(fed(rx), limits(300, 1024, 500), &refused, "test");
    tx.send(Ok(Frame::data(Bytes::from_static(b"{"))))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_ok());
    // The reader (say, a slow upstream) does not poll for 10 s; the
    // client had sent the rest meanwhile.
    tx.send(Ok(Frame::data(Bytes::from_static(b"}"))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(body.frame().await.unwrap().is_ok());
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(refused.get(), 0);
}

#[tokio::test]
async fn an_ended_body_costs_no_watch() {
    let refused = counter();
    let (body, cut) = TimedBody::new(
        http_body_util::Empty::<Bytes>::new(),
        limits(300, 1024, 500),
        &refused,
        "test",
    );
    assert!(cut.is_none());
    assert!(body.watch.is_none());
}
