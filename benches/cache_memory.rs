//! Memory per cached token: fills a `TokenCache` with N distinct tokens and
//! reports the resident-set growth per entry — the whole cost of a cached
//! token — next to the part of it that is the cached record (the compact
//! `CachedRecord`, not the full `TokenRecord` the store keeps). Run:
//! `cargo bench --bench cache_memory [-- N]` (default 1,000,000). Results:
//! docs/performance.md.
//!
//! `cargo bench --bench cache_memory -- clients [N]` measures the same for
//! failed-auth limiting instead: the memory per tracked client address.
//!
//! The store behind the cache is a generator (each hash gets a fresh record
//! of realistic size), so that only the cache's own memory is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(not(feature = "mimalloc"))]
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use hawzu_gate::cache::{CacheOptions, CachedGrant, CachedRecord, CachedScope, TokenCache};
use hawzu_gate::store::{ListQuery, Page, StoreError, Stored, TokenStore};
use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{ProjectGrant, Scope, TokenHash, TokenId, TokenRecord};
use jiff::Timestamp;

/// The gate's allocator (src/main.rs), so that the resident set is what the
/// gate's would be.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Without it, the system allocator, counting the bytes asked of it: what
/// the cache needs before any allocator's rounding and headers.
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

#[derive(Clone)]
struct Generator;

fn record() -> TokenRecord {
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().expect("random"),
        name: "CI Runner".into(),
        workspace_id: "ws_0123456789".into(),
        scope: Scope::Project {
            projects: vec![ProjectGrant {
                project_id: "proj_0123456789".into(),
                role: "project_member".into(),
            }],
        },
        created_by: "alice@example.com".into(),
        created_at: Timestamp::now(),
        expires_at: Some(Timestamp::now()),
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        description: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}

/// Heap bytes the record owns (its strings and vector), beside its struct.
fn record_heap(r: &TokenRecord) -> usize {
    let projects = match &r.scope {
        Scope::Project { projects } => {
            projects.capacity() * std::mem::size_of::<ProjectGrant>()
                + projects
                    .iter()
                    .map(|g| g.project_id.capacity() + g.role.capacity())
                    .sum::<usize>()
        }
        Scope::Workspace { role } => role.capacity(),
    };
    r.id.as_str().len()
        + r.name.capacity()
        + r.workspace_id.capacity()
        + r.created_by.capacity()
        + projects
}

/// Heap bytes a cached record owns (the workspace id, the roles and grants).
/// Allocator rounding is not counted; the RSS figure includes it.
fn cached_heap(r: &CachedRecord) -> usize {
    let scope = match r.scope() {
        CachedScope::Workspace { role } => role.len(),
        CachedScope::Project { grants } => {
            grants.len() * std::mem::size_of::<CachedGrant>()
                + grants
                    .iter()
                    .map(|g| g.project_id.len() + g.role.len())
                    .sum::<usize>()
        }
    };
    // The expiry header value (made once per cached token) and the boxed
    // context limits, when the token has them.
    let expires = r.expires_header().map_or(0, |v| v.len());
    let limits = r.limits().map_or(0, |l| {
        std::mem::size_of::<hawzu_gate::cache::CachedLimits>()
            + std::mem::size_of_val(&*l.allow_from)
    });
    r.workspace_id().len() + scope + expires + limits
}

impl TokenStore for Generator {
    async fn get(&self, _: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        Ok(Some(record()))
    }
    async fn find(&self, _: &TokenId) -> Result<Option<Stored>, StoreError> {
        Ok(None)
    }
    async fn get_stored(&self, _: &TokenHash) -> Result<Option<Stored>, StoreError> {
        Ok(None)
    }
    async fn create(&self, _: &TokenHash, _: &TokenRecord) -> Result<(), StoreError> {
        Ok(())
    }
    async fn replace(&self, _: &Stored, _: &TokenRecord) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn remove(&self, _: &Stored) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn list(&self, _: ListQuery) -> Result<Page, StoreError> {
        Ok(Page {
            tokens: Vec::new(),
            next: None,
        })
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Memory per client address the failed-auth limiter tracks: N distinct
/// addresses, one failure each, into a limiter sized to hold them all.
fn clients(n: u64) {
    use hawzu_gate::clients::FailedAuth;
    use hawzu_gate::config::{FailedAuthSettings, HumanDuration};
    let limiter = FailedAuth::new(&FailedAuthSettings {
        limit: 30,
        window: HumanDuration(Duration::from_secs(3600)),
        max_clients: n + 1_000,
    });
    let addr = |i: u64| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
    // Warm the allocator and moka's internals first.
    for i in 0..1000u64 {
        limiter.failed(addr(u64::from(u32::MAX >> 1) - i));
    }
    let before = rss_kib();
    let start = Instant::now();
    for i in 0..n {
        limiter.failed(addr(i));
    }
    let after = rss_kib();
    let per_client = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!("clients tracked       {n}");
    println!("fill time             {:?}", start.elapsed());
    println!("RSS delta             {} KiB", after.saturating_sub(before));
    println!("per tracked client    {per_client:.0} bytes");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n_arg = || args.iter().find_map(|a| a.parse::<u64>().ok());
    if args.iter().any(|a| a == "clients") {
        clients(n_arg().unwrap_or(1_000_000));
        return;
    }
    let n: u64 = n_arg().unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cache = Arc::new(TokenCache::new(
            Generator,
            CacheOptions {
                ttl: Duration::from_secs(3600),
                negative_ttl: Duration::from_secs(5),
                max_entries: n + 1,
                stale_if_error: Duration::ZERO,
            },
        ));
        // Warm the allocator and moka's internals first.
        for i in 0..1000u64 {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(u64::MAX - i).to_le_bytes());
            cache.lookup(&TokenHash(h)).await.expect("lookup");
        }
        cache.sync().await;
        let before = rss_kib();
        #[cfg(not(feature = "mimalloc"))]
        let region = Region::new(GLOBAL);
        let start = Instant::now();
        for i in 0..n {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.to_le_bytes());
            cache.lookup(&TokenHash(h)).await.expect("lookup");
        }
        cache.sync().await;
        let after = rss_kib();
        let sample = record();
        let full = std::mem::size_of::<TokenRecord>() + record_heap(&sample);
        let cached = CachedRecord::new(&sample);
        let cached_struct = std::mem::size_of::<CachedRecord>();
        let cached_heap = cached_heap(&cached);
        let per_entry = (after.saturating_sub(before) * 1024) as f64 / n as f64;
        println!("entries               {}", cache.entry_count());
        println!("fill time             {:?}", start.elapsed());
        println!("RSS delta             {} KiB", after.saturating_sub(before));
        println!("per cached token      {per_entry:.0} bytes (all of it: record, key, cache)");
        println!("cached record         {cached_struct} bytes + {cached_heap} on the heap");
        println!(
            "cache and key         {:.0} bytes per token beyond the cached record",
            per_entry - (cached_struct + cached_heap) as f64
        );
        #[cfg(not(feature = "mimalloc"))]
        {
            let change = region.change();
            let asked = change.bytes_allocated as f64 + change.bytes_reallocated as f64
                - change.bytes_deallocated as f64;
            println!(
                "asked of the allocator {:.0} bytes per token (before its rounding and headers)",
                asked / n as f64
            );
        }
        println!("(the full record, kept only in the store: {full} bytes)");
    });
}
