//! Paged listings from the admin API (`token list`, `audit`): one page, or
//! with `--all` every page, items kept as the server sent them. Above both
//! `global` (the client, exit codes) and `output` (how failures are shown).

use super::global::REFUSED;
use super::output::{Output, encode};
use crate::admin::client::AdminClient;

/// Prints a listing as `--json` shows it: the server's page,
/// `{"<items>": […], "next_cursor": …}` (keys sorted, as the server's
/// JSON is), items as the server sent them.
pub(super) fn say_json_page(items: &str, found: Vec<serde_json::Value>, cursor: Option<String>) {
    let mut page = serde_json::Map::new();
    page.insert(items.to_owned(), serde_json::Value::Array(found));
    page.insert(
        "next_cursor".to_owned(),
        cursor.map_or(serde_json::Value::Null, serde_json::Value::String),
    );
    say!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(page)).unwrap_or_default()
    );
}

/// The items of a paged listing (`GET path?params…`, answered as
/// `{"<items>": […], "next_cursor": …}`): one page from `cursor`, or with
/// `all` every next page until the server names no cursor. Items are kept
/// as the server sent them (`--json` passes them on unchanged). `Err` is
/// the exit code, the failure already reported by `out`.
pub(super) async fn fetch_pages(
    client: &AdminClient,
    out: &Output,
    path: &str,
    params: &[String],
    items: &str,
    mut cursor: Option<String>,
    all: bool,
) -> Result<(Vec<serde_json::Value>, Option<String>), u8> {
    let mut found = Vec::new();
    loop {
        let mut q = params.to_vec();
        if let Some(c) = &cursor {
            q.push(format!("cursor={}", encode(c)));
        }
        let answer = client
            .call(http::Method::GET, &format!("{path}?{}", q.join("&")))
            .await;
        let mut page = match answer {
            Ok((status, v)) if status.is_success() => v,
            other => return Err(out.finish(other, |_: serde_json::Value| {})),
        };
        let Some(serde_json::Value::Array(got)) = page.get_mut(items).map(serde_json::Value::take)
        else {
            complain!("error: the admin API answered a page without a `{items}` list");
            return Err(REFUSED);
        };
        cursor = page
            .get("next_cursor")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        found.extend(got);
        if !all || cursor.is_none() {
            return Ok((found, cursor));
        }
    }
}
