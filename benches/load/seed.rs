//! The load harness's seeder: writes N workspace tokens straight into a
//! Redis store (the same `TokenStore::create` the admin API uses) and prints
//! their values, one per line, for the load generator to pick from.
//!
//! `cargo run --release --example load-seed -- REDIS_URL KEY_PREFIX N > tokens.txt`

use std::time::Duration;

use hawzu_gate::store::{RedisStore, TokenStore, redis::RedisOptions};
use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{Scope, TokenId, TokenRecord, TokenSecret};
use jiff::Timestamp;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(prefix), Some(n)) = (
        args.next(),
        args.next(),
        args.next().and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: load-seed REDIS_URL KEY_PREFIX N");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = RedisStore::new(RedisOptions {
            url,
            key_prefix: prefix,
            timeout: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
        })
        .expect("redis store");
        let mut tasks = Vec::new();
        let per_task = n.div_ceil(32);
        for t in 0..32 {
            let store = store.clone();
            let count = per_task.min(n.saturating_sub(t * per_task));
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(count);
                for _ in 0..count {
                    let secret = TokenSecret::generate().expect("random");
                    let record = TokenRecord {
                        v: RECORD_VERSION,
                        id: TokenId::generate().expect("random"),
                        name: "load".into(),
                        workspace_id: "ws_1".into(),
                        scope: Scope::Workspace {
                            role: "workspace_viewer".into(),
                        },
                        created_by: "load-seed".into(),
                        created_at: Timestamp::now(),
                        expires_at: None,
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
                    };
                    store.create(&secret.hash(), &record).await.expect("create");
                    out.push(secret.expose().to_owned());
                }
                out
            }));
        }
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        for t in tasks {
            for s in t.await.expect("task") {
                use std::io::Write;
                let _ = writeln!(stdout, "{s}");
            }
        }
    });
}
