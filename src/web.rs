//! HTTP helpers shared by every listener: the JSON answer, the request-id
//! header and the ids the gate makes. Below the doors, ops and admin; knows
//! nothing of tokens, decisions or configuration.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// `X-Request-Id`: taken from the client when sane, else made here; sent
/// upstream and back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A JSON answer with `no-store` caching.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Request ids: a random per-process prefix and a counter; unique, cheap,
/// no system call per request. Each thread takes the counter's values in
/// blocks ([`ID_BLOCK`]), so the doors' threads do not bounce one shared
/// cache line per request (ids stay unique, not ordered across threads).
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
    /// Tells this set of ids from another in a thread's block.
    instance: u64,
}

/// Counter values a thread takes at a time.
const ID_BLOCK: u64 = 1024;

thread_local! {
    /// This thread's block: (instance, next value, end of the block).
    static ID_BLOCK_OF_THREAD: std::cell::Cell<(u64, u64, u64)> =
        const { std::cell::Cell::new((0, 0, 0)) };
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    pub fn new() -> Self {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        let mut buf = [0u8; 10];
        let prefix = match crate::token::value::fill_base62(&mut buf) {
            Ok(()) => buf.iter().map(|&b| b as char).collect(),
            Err(_) => format!("{:x}", std::process::id()),
        };
        Self {
            prefix,
            next: AtomicU64::new(1),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The request's id: the client's `X-Request-Id` when it is sane
    /// (1–128 visible ASCII characters), else a new one.
    pub fn of(&self, headers: &HeaderMap) -> HeaderValue {
        headers
            .get(REQUEST_ID)
            .filter(|v| sane_request_id(v.as_bytes()))
            .cloned()
            .unwrap_or_else(|| self.next())
    }

    /// A new id: `hg-<prefix>-<counter in hex>`.
    pub fn next(&self) -> HeaderValue {
        HeaderValue::from_maybe_shared(Bytes::from(id_bytes(&self.prefix, self.take())))
            .unwrap_or_else(|_| HeaderValue::from_static("hg-unknown"))
    }

    /// The next counter value, from this thread's block.
    fn take(&self) -> u64 {
        ID_BLOCK_OF_THREAD.with(|cell| {
            let (instance, next, end) = cell.get();
            let (next, end) = if instance == self.instance && next < end {
                (next, end)
            } else {
                let start = self.next.fetch_add(ID_BLOCK, Ordering::Relaxed);
                (start, start + ID_BLOCK)
            };
            cell.set((self.instance, next + 1, end));
            next
        })
    }
}

/// `hg-<prefix>-<n in hex>`, exactly its length (the bytes become the
/// header value with no copy). The hex is written by hand: `fmt` cost more
/// than the rest of the id.
fn id_bytes(prefix: &str, n: u64) -> Vec<u8> {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    let mut id = Vec::with_capacity(3 + prefix.len() + 1 + digits as usize);
    id.extend_from_slice(b"hg-");
    id.extend_from_slice(prefix.as_bytes());
    id.push(b'-');
    for shift in (0..digits).rev() {
        id.push(b"0123456789abcdef"[(n >> (shift * 4)) as usize & 0xf]);
    }
    id
}

/// Whether a client's request id is kept: 1–128 visible ASCII characters.
pub fn sane_request_id(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn counter(id: &HeaderValue, ids: &RequestIds) -> u64 {
        let s = id.to_str().unwrap();
        let hex = s
            .strip_prefix(&format!("hg-{}-", ids.prefix))
            .unwrap_or_else(|| panic!("{s}"));
        assert!(!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!hex.starts_with('0') || hex == "0", "{s}");
        u64::from_str_radix(hex, 16).unwrap()
    }

    #[test]
    fn ids_are_the_counter_in_lower_case_hex_without_leading_zeros() {
        for n in [
            0,
            1,
            9,
            0xa,
            0xf,
            0x10,
            0xff,
            0x100,
            0xdead_beef,
            1 << 63,
            u64::MAX,
        ] {
            let id = id_bytes("3f2a9c1d", n);
            assert_eq!(id.len(), id.capacity(), "{n:x}: exactly its length");
            assert_eq!(String::from_utf8(id).unwrap(), format!("hg-3f2a9c1d-{n:x}"));
        }
    }

    #[test]
    fn ids_are_unique_across_threads_and_instances() {
        let ids = std::sync::Arc::new(RequestIds::new());
        let other = std::sync::Arc::new(RequestIds::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (ids, other) = (ids.clone(), other.clone());
                std::thread::spawn(move || {
                    // Alternating instances on one thread: each keeps its
                    // own counter.
                    (0..3000)
                        .map(|i| {
                            let which = if i % 7 == 0 { &other } else { &ids };
                            let id = which.next();
                            (std::ptr::eq(which, &other), counter(&id, which))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for t in threads {
            for v in t.join().unwrap() {
                assert!(seen.insert(v), "{v:?} given twice");
            }
        }
        assert_eq!(seen.len(), 12_000);
    }

    #[test]
    fn a_thread_counts_on_within_its_block() {
        let ids = RequestIds::new();
        let a = counter(&ids.next(), &ids);
        let b = counter(&ids.next(), &ids);
        assert_eq!(b, a + 1);
        for _ in 0..ID_BLOCK {
            ids.next();
        }
        assert!(counter(&ids.next(), &ids) > b);
    }

    #[test]
    fn a_sane_client_id_is_kept_and_any_other_replaced() {
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ids.of(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("a b"));
        counter(&ids.of(&h), &ids);
        h.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        counter(&ids.of(&h), &ids);
    }
}
