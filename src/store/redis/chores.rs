//! [`Chores`] in Redis: a chore's hold is `<prefix>chore:<name>`, holding
//! its holder's value (this store's [`holder_value`]) for a lifetime (taken or extended by one script,
//! given up by compare-and-delete), its last result
//! `<prefix>chore-result:<name>`. One key per command.

use std::time::Duration;

use super::{RedisStore, redis_err};
use crate::store::{Chores, StoreError};

/// A duration in whole ms for `PX`, at least 1 (0 is refused by Redis).
fn px(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Chores for RedisStore {
    async fn hold_chore(&self, chore: &str, hold: Duration) -> Result<bool, StoreError> {
        let mut hold_cmd = self.inner.hold_chore.key(self.chore_key(chore));
        hold_cmd.arg(&self.inner.chore_holder).arg(px(hold));
        let hold_cmd = &hold_cmd;
        let held: i64 = self
            .timed(
                |mut conn| async move { hold_cmd.invoke_async(&mut conn).await.map_err(redis_err) },
            )
            .await?;
        Ok(held == 1)
    }

    async fn leave_chore(&self, chore: &str) -> Result<(), StoreError> {
        let mut leave = self.inner.compare_and_delete.key(self.chore_key(chore));
        leave.arg(&self.inner.chore_holder);
        let leave = &leave;
        self.timed(|mut conn| async move {
            leave
                .invoke_async::<i64>(&mut conn)
                .await
                .map(drop)
                .map_err(redis_err)
        })
        .await
    }

    async fn share_chore_result(
        &self,
        chore: &str,
        result: &[u8],
        keep: Duration,
    ) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.chore_result_key(chore))
            .arg(result)
            .arg("PX")
            .arg(px(keep));
        let set = &set;
        self.timed(
            |mut conn| async move { set.query_async::<()>(&mut conn).await.map_err(redis_err) },
        )
        .await
    }

    async fn chore_result(&self, chore: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.chore_result_key(chore));
        let get = &get;
        self.timed(|mut conn| async move { get.query_async(&mut conn).await.map_err(redis_err) })
            .await
    }
}

/// A value of this store's own — one per store opened, so one per gate —
/// for the chores it holds: 16 random letters and digits (without
/// randomness, the process id and the time tell gates apart).
pub(super) fn holder_value() -> String {
    let mut buf = [0u8; 16];
    match crate::token::value::fill_base62(&mut buf) {
        Ok(()) => buf.iter().map(|&b| b as char).collect(),
        Err(_) => format!("{}-{:?}", std::process::id(), std::time::SystemTime::now()),
    }
}
