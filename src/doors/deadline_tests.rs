use std::future::{Future, pending};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{DoorTimer, Elapsed, Kind, Sleep, drive, here, install, timeout};

/// Slack for a loaded machine beyond the grain: a deadline must fire no
/// earlier than set, and not much later.
const SLACK: Duration = Duration::from_millis(150);

/// Runs `f` on a thread of its own with a single-threaded runtime that has
/// called [`install`], as a door thread does.
fn on_a_door_thread<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T>>> + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async move {
            install();
            f().await
        });
        tx.send(out).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the door thread answers")
}

fn is_coarse(s: &Sleep) -> bool {
    matches!(s.kind, Kind::Coarse(_))
}

#[test]
fn a_sleep_on_a_door_thread_fires_at_its_deadline_not_before() {
    let (coarse, waited) = on_a_door_thread(|| {
        Box::pin(async {
            let start = Instant::now();
            let sleep = Sleep::until(start + Duration::from_millis(60));
            let coarse = is_coarse(&sleep);
            sleep.await;
            (coarse, start.elapsed())
        })
    });
    assert!(coarse, "a door thread keeps its own list");
    assert!(waited >= Duration::from_millis(60), "{waited:?}");
    assert!(waited < Duration::from_millis(60) + SLACK, "{waited:?}");
}

#[test]
fn an_earlier_deadline_set_after_a_later_one_is_not_late() {
    // The 40 ms sleep comes after the 400 ms one: the task looking over the
    // list must be told, or it would look only at 400 ms.
    let fired = on_a_door_thread(|| {
        Box::pin(async {
            let start = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for ms in [400u64, 40, 200] {
                tasks.spawn(async move {
                    Sleep::until(start + Duration::from_millis(ms)).await;
                    (ms, start.elapsed())
                });
                if ms == 400 {
                    // The list's task has looked, and will look next at 400 ms.
                    let deadlines = here().expect("installed");
                    while deadlines.lock().next_look.is_none() {
                        tokio::task::yield_now().await;
                    }
                }
            }
            let mut fired = Vec::new();
            while let Some(r) = tasks.join_next().await {
                fired.push(r.unwrap());
            }
            fired
        })
    });
    let order: Vec<u64> = fired.iter().map(|(ms, _)| *ms).collect();
    assert_eq!(order, [40, 200, 400]);
    for (ms, at) in fired {
        let deadline = Duration::from_millis(ms);
        assert!(at >= deadline, "{ms} ms fired at {at:?}");
        assert!(at < deadline + SLACK, "{ms} ms fired at {at:?}");
    }
}

#[test]
fn a_dropped_sleep_frees_its_entry_for_the_next() {
    let (entries, free_after_drop, entries_after_second) = on_a_door_thread(|| {
        Box::pin(async {
            let deadlines = here().expect("installed");
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let mut first = Sleep::until(Instant::now() + Duration::from_secs(60));
            assert_eq!(std::pin::Pin::new(&mut first).poll(&mut cx), Poll::Pending);
            let entries = deadlines.lock().entries.len();
            drop(first);
            let free_after_drop = deadlines.lock().free.len();
            let mut second = Sleep::until(Instant::now() + Duration::from_secs(60));
            assert_eq!(std::pin::Pin::new(&mut second).poll(&mut cx), Poll::Pending);
            let entries_after_second = deadlines.lock().entries.len();
            (entries, free_after_drop, entries_after_second)
        })
    });
    assert_eq!(entries, 1);
    assert_eq!(free_after_drop, 1, "the dropped sleep's entry is free");
    assert_eq!(entries_after_second, 1, "and taken by the next sleep");
}

#[test]
fn a_fired_sleep_stays_ready_and_its_entry_is_free() {
    let (again, used) = on_a_door_thread(|| {
        Box::pin(async {
            let mut sleep = Sleep::until(Instant::now() + Duration::from_millis(20));
            (&mut sleep).await;
            let waker = std::task::Waker::noop();
            let again = std::pin::Pin::new(&mut sleep).poll(&mut Context::from_waker(waker));
            let used = here()
                .expect("installed")
                .lock()
                .entries
                .iter()
                .filter(|e| e.used)
                .count();
            (again, used)
        })
    });
    assert_eq!(again, Poll::Ready(()));
    assert_eq!(used, 0);
}

#[test]
fn timeout_gives_the_output_of_a_future_that_finishes_first() {
    let out = on_a_door_thread(|| {
        Box::pin(async {
            timeout(Duration::from_secs(5), async {
                tokio::task::yield_now().await;
                7
            })
            .await
        })
    });
    assert_eq!(out, Ok(7));
}

#[test]
fn timeout_elapses_for_a_future_that_does_not_finish() {
    let (out, waited) = on_a_door_thread(|| {
        Box::pin(async {
            let start = Instant::now();
            let out = timeout(Duration::from_millis(50), pending::<()>()).await;
            (out, start.elapsed())
        })
    });
    assert_eq!(out, Err(Elapsed));
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(waited < Duration::from_millis(50) + SLACK, "{waited:?}");
}

#[test]
fn hypers_timer_on_a_door_thread_uses_the_list() {
    let waited = on_a_door_thread(|| {
        Box::pin(async {
            let timer = DoorTimer::here();
            assert!(timer.deadlines.is_some());
            let start = Instant::now();
            hyper::rt::Timer::sleep(&timer, Duration::from_millis(30)).await;
            let entries = here().expect("installed").lock().entries.len();
            assert_eq!(entries, 1, "the sleep went on the thread's list");
            start.elapsed()
        })
    });
    assert!(waited >= Duration::from_millis(30), "{waited:?}");
    assert!(waited < Duration::from_millis(30) + SLACK, "{waited:?}");
}

#[tokio::test]
async fn without_a_list_the_same_calls_use_tokios_timers() {
    // A thread that never installed a list (the shared runtime's).
    assert!(here().is_none());
    let sleep = Sleep::until(Instant::now() + Duration::from_millis(20));
    assert!(!is_coarse(&sleep));
    let start = Instant::now();
    sleep.await;
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(DoorTimer::here().deadlines.is_none());
    assert_eq!(
        timeout(Duration::from_millis(20), pending::<()>()).await,
        Err(Elapsed)
    );
    assert_eq!(timeout(Duration::from_secs(5), async { 3 }).await, Ok(3));
}

#[tokio::test]
async fn the_task_looking_over_a_list_ends_with_the_list() {
    let deadlines = super::Deadlines::default();
    let driver = tokio::spawn(drive(std::sync::Arc::downgrade(&deadlines.0)));
    // It has looked once (nothing there) and waits for a first entry.
    let deadline = Instant::now() + Duration::from_secs(5);
    while deadlines.lock().driver.is_none() {
        assert!(Instant::now() < deadline, "the driver never looked");
        tokio::task::yield_now().await;
    }
    drop(deadlines);
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the driver ends")
        .unwrap();
}

#[test]
fn a_deadline_too_far_to_name_waits_and_never_panics() {
    let (out, pending_far) = on_a_door_thread(|| {
        Box::pin(async {
            let out = timeout(Duration::MAX, async { 5 }).await;
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let mut far = Box::pin(hyper::rt::Timer::sleep(&DoorTimer::here(), Duration::MAX));
            let first = far.as_mut().poll(&mut cx);
            // Another sleep after it is not held up by it.
            Sleep::until(Instant::now() + Duration::from_millis(10)).await;
            (
                out,
                first.is_pending() && far.as_mut().poll(&mut cx).is_pending(),
            )
        })
    });
    assert_eq!(out, Ok(5));
    assert!(pending_far, "a sleep of Duration::MAX stays pending");
}

#[test]
fn the_list_shrinks_back_after_a_spike() {
    let (peak, after, capacity) = on_a_door_thread(|| {
        Box::pin(async {
            let deadlines = here().expect("installed");
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let far = || Sleep::until(Instant::now() + Duration::from_secs(60));
            // A spike: 10,000 connections waiting at once.
            let mut spike: Vec<Sleep> = (0..10_000).map(|_| far()).collect();
            for s in &mut spike {
                assert_eq!(std::pin::Pin::new(s).poll(&mut cx), Poll::Pending);
            }
            let peak = deadlines.lock().entries.len();
            // It ends; the ten connections that stay (the last to come)
            // wait for their next request on a new deadline each, as
            // hyper's head timer does.
            let stay = spike.split_off(9_990);
            drop(spike);
            drop(stay);
            let mut next: Vec<Sleep> = (0..10).map(|_| far()).collect();
            for s in &mut next {
                assert_eq!(std::pin::Pin::new(s).poll(&mut cx), Poll::Pending);
            }
            // A look over the list (one is due).
            Sleep::until(Instant::now() + Duration::from_millis(20)).await;
            let list = deadlines.lock();
            let after = list.entries.len();
            let capacity = list.entries.capacity();
            drop(list);
            drop(next);
            (peak, after, capacity)
        })
    });
    assert_eq!(peak, 10_000);
    assert!(after <= 64, "{after} entries kept after the spike");
    assert!(capacity <= 1024, "capacity {capacity} kept after the spike");
}
