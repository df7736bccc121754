//! Coarse deadlines for the door threads: the request head's read timeout
//! (`limits.header_read_timeout`, through hyper's timer) and the proxy's
//! wait for the upstream's answer (`upstream.timeout`).
//!
//! A door thread keeps its deadlines in one list that a single task of its
//! runtime looks over when the earliest is due — instead of a tokio timer
//! entry armed and cleared per request, which cost a proxied request ~2.2k
//! instructions for the two (docs/performance.md). A deadline never fires
//! early, and at most [`GRAIN`] late (plus the thread's own scheduling).
//! Only a thread that called [`install`] has a list; anywhere else the same
//! calls use tokio's timers, so nothing here is needed for correctness.

use std::cell::OnceCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioTimer;

/// How late a deadline may fire: deadlines due within it of each other are
/// fired by one look over the list.
pub const GRAIN: Duration = Duration::from_millis(10);

/// Entries a list keeps however few are in use (see [`List::fire`]).
const KEPT: usize = 64;

thread_local! {
    static HERE: OnceCell<Deadlines> = const { OnceCell::new() };
}

/// Gives this thread a list of deadlines, looked over by a task spawned on
/// the current runtime; for a thread that runs one single-threaded runtime
/// for its whole life (a door thread). Called again, it keeps the first.
pub fn install() {
    HERE.with(|here| {
        here.get_or_init(|| {
            let deadlines = Deadlines::default();
            tokio::spawn(drive(Arc::downgrade(&deadlines.0)));
            deadlines
        });
    });
}

/// This thread's deadlines, if [`install`] gave it some.
fn here() -> Option<Deadlines> {
    HERE.with(|here| here.get().cloned())
}

/// Runs `fut` for at most `after`: its output, or [`Elapsed`].
pub fn timeout<F: Future>(after: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: Sleep::until(from_now(after)),
    }
}

/// `after` from now; a time too far to name is 30 years away (as tokio's
/// timers have it), never a panic.
fn from_now(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365 * 30)))
        .unwrap_or(now)
}

pin_project_lite::pin_project! {
    /// The future [`timeout`] returns. A named future, not an `async fn`:
    /// the inner future (the upstream exchange, the proxy's largest) is
    /// held where it was made, not moved once more into a pinned slot.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        sleep: Sleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}

/// The time [`timeout`] allowed has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline has elapsed")]
pub struct Elapsed;

/// hyper's timer for a listener: this thread's deadlines if it has them,
/// tokio's timers otherwise.
#[derive(Debug, Clone)]
pub struct DoorTimer {
    deadlines: Option<Deadlines>,
}

impl DoorTimer {
    /// The timer for listeners served on this thread.
    pub fn here() -> Self {
        Self { deadlines: here() }
    }
}

impl hyper::rt::Timer for DoorTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(from_now(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        match &self.deadlines {
            Some(d) => Box::pin(Sleep::coarse(d.clone(), deadline)),
            None => TokioTimer::new().sleep_until(deadline),
        }
    }
}

/// Waits until a deadline: on this thread's list if it has one, or as a
/// tokio timer.
#[derive(Debug)]
pub struct Sleep {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Coarse(Coarse),
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

#[derive(Debug)]
struct Coarse {
    deadlines: Deadlines,
    deadline: Instant,
    /// Its entry in the list, from the first poll until it fires or is
    /// dropped; only this sleep frees it.
    entry: Option<usize>,
    fired: bool,
}

impl Sleep {
    /// Fires at `deadline`.
    pub fn until(deadline: Instant) -> Self {
        match here() {
            Some(d) => Self::coarse(d, deadline),
            None => Self {
                kind: Kind::Tokio(Box::pin(tokio::time::sleep_until(deadline.into()))),
            },
        }
    }

    fn coarse(deadlines: Deadlines, deadline: Instant) -> Self {
        Self {
            kind: Kind::Coarse(Coarse {
                deadlines,
                deadline,
                entry: None,
                fired: false,
            }),
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().kind {
            Kind::Tokio(sleep) => sleep.as_mut().poll(cx),
            Kind::Coarse(c) => c.poll(cx),
        }
    }
}

impl hyper::rt::Sleep for Sleep {}

impl Coarse {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired {
            return Poll::Ready(());
        }
        let mut list = self.deadlines.lock();
        let Some(i) = self.entry else {
            // First poll: on the list, and the task looking over it told if
            // it would otherwise look more than a grain too late.
            self.entry = Some(list.add(self.deadline, cx.waker().clone()));
            let driver = list.look_by(self.deadline);
            drop(list);
            if let Some(d) = driver {
                d.wake();
            }
            return Poll::Pending;
        };
        if list.entries[i].fired {
            let waker = list.free(i);
            drop(list);
            drop(waker);
            self.entry = None;
            self.fired = true;
            return Poll::Ready(());
        }
        let old = match &mut list.entries[i].waker {
            Some(w) if w.will_wake(cx.waker()) => None,
            slot => slot.replace(cx.waker().clone()),
        };
        drop(list);
        drop(old);
        Poll::Pending
    }
}

impl Drop for Coarse {
    fn drop(&mut self) {
        if let Some(i) = self.entry.take() {
            let waker = self.deadlines.lock().free(i);
            // Dropped outside the lock.
            drop(waker);
        }
    }
}

/// One thread's list of deadlines.
#[derive(Debug, Clone, Default)]
struct Deadlines(Arc<Inner>);

/// The list behind its lock; dropping it ends the task looking over it.
#[derive(Debug, Default)]
struct Inner {
    list: Mutex<List>,
}

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, List> {
        self.0.lock()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, List> {
        // Never held across a panic point that could leave it half-changed.
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The driver holds no strong reference while it waits: woken, it
        // finds the list gone and ends.
        let list = self.list.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = list.driver.take() {
            d.wake();
        }
    }
}

#[derive(Debug, Default)]
struct List {
    entries: Vec<Entry>,
    /// Indices of free entries, the lowest first: the entries in use
    /// gather at the front, so that after a spike the back can be cut off.
    free: BinaryHeap<Reverse<usize>>,
    /// When the driver will next look over the list; `None` while it waits
    /// for a first entry.
    next_look: Option<Instant>,
    /// Wakes the driver.
    driver: Option<Waker>,
}

#[derive(Debug)]
struct Entry {
    deadline: Instant,
    /// `None` once fired, and while free.
    waker: Option<Waker>,
    fired: bool,
    used: bool,
}

impl List {
    fn add(&mut self, deadline: Instant, waker: Waker) -> usize {
        let entry = Entry {
            deadline,
            waker: Some(waker),
            fired: false,
            used: true,
        };
        match self.free.pop() {
            Some(Reverse(i)) => {
                self.entries[i] = entry;
                i
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        }
    }

    /// Frees entry `i`; its waker, to be dropped outside the lock.
    fn free(&mut self, i: usize) -> Option<Waker> {
        let e = &mut self.entries[i];
        e.used = false;
        e.fired = false;
        self.free.push(Reverse(i));
        e.waker.take()
    }

    /// The driver's waker, if it must look by `deadline` and would look
    /// more than a grain later (or not at all).
    fn look_by(&mut self, deadline: Instant) -> Option<Waker> {
        // A deadline too far to add a grain to is never late.
        let late = match (self.next_look, deadline.checked_add(GRAIN)) {
            (None, _) => true,
            (Some(t), Some(by)) => t > by,
            (Some(_), None) => false,
        };
        if late {
            self.next_look = Some(deadline);
            self.driver.take()
        } else {
            None
        }
    }

    /// Fires every waiting entry due at `now` (their wakers into `due`);
    /// the earliest deadline still waiting. After a spike (the entries in
    /// use all in the front half), cuts the rest off: a list sized for a
    /// burst of connections does not stay that size, nor this look that
    /// long.
    fn fire(&mut self, now: Instant, due: &mut Vec<Waker>) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut in_use = 0;
        for (i, e) in self.entries.iter_mut().enumerate() {
            if !e.used {
                continue;
            }
            in_use = i + 1;
            if e.fired {
                continue;
            }
            if e.deadline <= now {
                e.fired = true;
                due.extend(e.waker.take());
            } else if next.is_none_or(|n| e.deadline < n) {
                next = Some(e.deadline);
            }
        }
        if self.entries.len() > KEPT && in_use <= self.entries.len() / 2 {
            self.entries.truncate(in_use);
            self.entries.shrink_to(KEPT.max(in_use));
            self.free = (0..in_use)
                .filter(|&i| !self.entries[i].used)
                .map(Reverse)
                .collect();
        }
        next
    }
}

/// Looks over the list whenever its earliest deadline is due (at most once
/// a grain) or a new one is earlier than the next look; ends when the list
/// is gone.
async fn drive(weak: Weak<Inner>) {
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut due = Vec::new();
    poll_fn(|cx| {
        loop {
            let Some(inner) = weak.upgrade() else {
                return Poll::Ready(());
            };
            let now = Instant::now();
            let mut list = inner.lock();
            let next = list.fire(now, &mut due);
            list.driver = Some(cx.waker().clone());
            list.next_look = next.map(|t| t.max(now + GRAIN));
            let look = list.next_look;
            drop(list);
            drop(inner);
            for w in due.drain(..) {
                w.wake();
            }
            let Some(at) = look else {
                return Poll::Pending;
            };
            timer.as_mut().reset(at.into());
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await;
}

#[cfg(test)]
#[path = "deadline_tests.rs"]
mod tests;
