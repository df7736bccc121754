//! Redaction: secrets never reach a log, an error or an answer. Token
//! values, admin keys, bearer credentials and URL passwords are replaced,
//! keeping enough of the shape (the prefix, the user) for a reader to know
//! what was there. Pure text functions; imports nothing of the crate.
//!
//! Token prefixes besides `hwz_` (`tokens.prefix`, `tokens.accepted_prefixes`)
//! are told once at start-up ([`also_redact`]); the list only grows, so a
//! value minted under any prefix this process has known stays redacted.

use std::sync::RwLock;

/// The token prefix redacted whatever the config says.
const DEFAULT_PREFIX: &str = "hwz_";

/// Token prefixes besides [`DEFAULT_PREFIX`], lowercase (see [`also_redact`]).
static EXTRA_PREFIXES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Redacts values starting with `prefix` too, from now on, in this process.
pub fn also_redact(prefix: &str) {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.is_empty() || prefix == DEFAULT_PREFIX {
        return;
    }
    let mut extra = EXTRA_PREFIXES.write().unwrap_or_else(|e| e.into_inner());
    if !extra.contains(&prefix) {
        extra.push(prefix);
    }
}

/// Calls `f` with every token prefix to redact (the default first).
fn with_prefixes<T>(f: impl FnOnce(&[&str]) -> T) -> T {
    let extra = EXTRA_PREFIXES.read().unwrap_or_else(|e| e.into_inner());
    let mut all: [&str; 8] = [DEFAULT_PREFIX; 8];
    if extra.len() < all.len() {
        for (slot, p) in all[1..].iter_mut().zip(extra.iter()) {
            *slot = p;
        }
        f(&all[..=extra.len()])
    } else {
        let mut all = vec![DEFAULT_PREFIX];
        all.extend(extra.iter().map(String::as_str));
        f(&all)
    }
}

/// A URL with its password replaced by `***`, for logs and errors. One
/// written without `scheme://` (a typo, `user:pw@host`) has everything
/// before its last `@` replaced: it may all be a password; one whose
/// authority has no `@` but a `:` followed by other than a port
/// (`redis://:pa`, a value cut inside its password) has its whole
/// authority replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{}://{user}:***{}", &url[..scheme_end], &url[at..])
        }
        (None, Some(at)) => format!("***{}", &url[at..]),
        (Some(scheme_end), _) => {
            let start = scheme_end + 3;
            let end = url[start..]
                .find(['/', '?', '#'])
                .map_or(url.len(), |i| start + i);
            let authority = &url[start..end];
            // A bracketed IPv6 host's colons are not a password's.
            let after_host = authority
                .rfind(']')
                .map_or(authority, |i| &authority[i + 1..]);
            match after_host.rsplit_once(':') {
                Some((_, port)) if !port.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{}***{}", &url[..start], &url[end..])
                }
                _ => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A path with anything shaped like a token value replaced, so a secret
/// pasted into a URL never reaches a log; and every character a terminal or
/// a log reader acts on escaped — ASCII controls as `\x0a`, the others
/// (C1 controls such as CSI and NEL, the line and paragraph separators, the
/// bidirectional formatting characters) as `\u{202e}` — so a path cannot
/// write lines of its own into a text log or make one read otherwise. (The
/// gRPC door takes any string Envoy sends; HTTP request lines cannot carry
/// ASCII controls, but hyper takes UTF-8 in the target.) At most
/// [`MAX_LOGGED_PATH`] bytes are shown, the rest named by its length.
pub fn redact_path(path: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    let redacted = redact_tokens_in_path(path);
    if redacted.len() <= MAX_LOGGED_PATH && !redacted.chars().any(acts_on_a_reader) {
        return redacted;
    }
    let mut out = String::with_capacity(redacted.len().min(MAX_LOGGED_PATH) + 24);
    let mut piece = String::with_capacity(12);
    for (at, c) in redacted.char_indices() {
        piece.clear();
        // Writing to a String cannot fail.
        let _ = if c.is_ascii_control() {
            write!(piece, "\\x{:02x}", u32::from(c))
        } else if acts_on_a_reader(c) {
            write!(piece, "\\u{{{:x}}}", u32::from(c))
        } else {
            piece.push(c);
            Ok(())
        };
        // Cut between whole characters and whole escapes, after redaction.
        if out.len() + piece.len() > MAX_LOGGED_PATH {
            let _ = write!(out, "…(+{} bytes)", redacted.len() - at);
            break;
        }
        out.push_str(&piece);
    }
    std::borrow::Cow::Owned(out)
}

/// Most bytes of a path a log line or span shows; the rest is named by its
/// length (a request may carry a path of `limits.max_header_bytes`).
pub const MAX_LOGGED_PATH: usize = 1024;

/// A character a terminal or a log reader acts on rather than shows: a
/// control character, the line or paragraph separator, or a bidirectional
/// formatting character.
pub fn acts_on_a_reader(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi_control(c)
}

/// The Unicode bidirectional formatting characters (UAX #9): they reorder
/// the text around them, so what is shown differs from what is there.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// The ways a secret's prefix is written in a path: as it is, and with its
/// closing `_` percent-encoded (`hwz%5F…`); admin keys' (`hwzadm_`) too.
fn path_prefixes(prefixes: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = Vec::with_capacity(prefixes.len() * 3 + 3);
    for p in prefixes.iter().copied().chain([ADMIN_KEY_PREFIX]) {
        all.push(p.to_owned());
        if let Some(stem) = p.strip_suffix('_') {
            all.push(format!("{stem}%5F"));
            all.push(format!("{stem}%5f"));
        }
    }
    all
}

/// What an admin key starts with (`hwzadm_` + base62).
const ADMIN_KEY_PREFIX: &str = "hwzadm_";

fn redact_tokens_in_path(path: &str) -> std::borrow::Cow<'_, str> {
    with_prefixes(|prefixes| {
        // Every prefix starts with its stem (`hwz`): most paths hold none.
        if !prefixes
            .iter()
            .chain([&ADMIN_KEY_PREFIX])
            .any(|p| path.contains(p.trim_end_matches('_')))
        {
            return std::borrow::Cow::Borrowed(path);
        }
        let written = path_prefixes(prefixes);
        let prefixes: Vec<&str> = written.iter().map(String::as_str).collect();
        if !prefixes.iter().any(|p| path.contains(p)) {
            return std::borrow::Cow::Borrowed(path);
        }
        let mut out = String::with_capacity(path.len());
        let mut rest = path;
        // The earliest prefix found, each time.
        while let Some((i, p)) = prefixes
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min_by_key(|&(i, p)| (i, std::cmp::Reverse(p.len())))
        {
            out.push_str(&rest[..i]);
            let tail = &rest[i + p.len()..];
            // `_` too: two values pasted together are one run, both redacted.
            let run = tail
                .bytes()
                .take_while(|&b| b.is_ascii_alphanumeric() || b == b'_')
                .count();
            out.push_str(p);
            out.push_str("…redacted");
            rest = &tail[run..];
        }
        out.push_str(rest);
        std::borrow::Cow::Owned(out)
    })
}

/// Text with every secret-shaped part replaced by `…redacted`: token values
/// (`hwz_` or another known token prefix + base62), admin keys (`hwzadm_` + base62), and whatever follows
/// `Bearer ` (any case) up to whitespace, a quote, a backslash or a comma.
/// A `hwz_` run takes `_` too, so values pasted together all go.
/// The prefixes stay, so a reader still sees what kind of value it was.
pub fn redact_secrets(text: &str) -> std::borrow::Cow<'_, str> {
    with_prefixes(|prefixes| redact_secrets_with(text, prefixes))
}

fn redact_secrets_with<'t>(text: &'t str, prefixes: &[&str]) -> std::borrow::Cow<'t, str> {
    const REDACTED: &str = "…redacted";
    let lower = text.to_ascii_lowercase();
    let (lb, tb) = (lower.as_bytes(), text.as_bytes());
    if !lower.contains("hwz")
        && !lower.contains("bearer ")
        && !lower.contains("basic ")
        && !prefixes.iter().any(|p| lower.contains(p))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let run = |from: usize, keep: fn(u8) -> bool| {
        from + tb[from..].iter().take_while(|&&b| keep(b)).count()
    };
    let mut out = String::with_capacity(text.len());
    let (mut last, mut i) = (0, 0);
    while i < lb.len() {
        let rest = &lb[i..];
        // (where the secret starts, where it ends); both on ASCII bytes.
        let found = if rest.starts_with(b"bearer ") {
            let start = run(i + 7, |b| b == b' ');
            let end = run(start, |b| {
                !b.is_ascii_whitespace() && !matches!(b, b'"' | b'\'' | b'\\' | b',' | b'`')
            });
            // `Bearer <key>` in a hint is a placeholder, not a secret.
            let placeholder = tb.get(start) == Some(&b'<') && text[start..end].contains('>');
            (end > start && !placeholder).then_some((start, end))
        } else if rest.starts_with(b"basic ") {
            // `Basic base64(user:password)`: only what decodes so, not the
            // word.
            let start = run(i + 6, |b| b == b' ');
            let end = run(start, |b| {
                b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
            });
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(&text[start..end])
                .is_ok_and(|d| d.contains(&b':'))
                .then_some((start, end))
        } else if rest.starts_with(b"hwzadm_") {
            Some((
                i + 7,
                run(i + 7, |b| b.is_ascii_alphanumeric() || b == b'_'),
            ))
        } else if let Some(p) = prefixes.iter().find(|p| rest.starts_with(p.as_bytes())) {
            let start = i + p.len();
            Some((
                start,
                run(start, |b| b.is_ascii_alphanumeric() || b == b'_'),
            ))
        } else {
            None
        };
        match found {
            Some((start, end)) => {
                out.push_str(&text[last..start]);
                out.push_str(REDACTED);
                last = end;
                i = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[last..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_cannot_write_lines_into_a_log() {
        assert_eq!(
            redact_path("/api/v1\nlevel=ERROR forged\r\u{7f}/x"),
            "/api/v1\\x0alevel=ERROR forged\\x0d\\x7f/x"
        );
        assert!(matches!(
            redact_path("/api/v1/x"),
            std::borrow::Cow::Borrowed(_)
        ));
        // Beyond ASCII: C1 controls (CSI, NEL), the Unicode line and
        // paragraph separators and the bidirectional overrides, which a
        // terminal or a log reader also acts on.
        assert_eq!(
            redact_path("/a\u{9b}2J\u{85}b\u{2028}c\u{2029}d\u{202e}e\u{2066}f"),
            "/a\\u{9b}2J\\u{85}b\\u{2028}c\\u{2029}d\\u{202e}e\\u{2066}f"
        );
        // Other text beyond ASCII is kept.
        assert_eq!(redact_path("/caf\u{e9}/\u{65e5}"), "/caf\u{e9}/\u{65e5}");
    }

    #[test]
    fn token_shaped_parts_of_paths_are_redacted() {
        assert_eq!(redact_path("/api/v1/x"), "/api/v1/x");
        let t = crate::token::TokenSecret::generate().unwrap();
        let p = format!("/api/{}/x", t.expose());
        let r = redact_path(&p);
        assert!(!r.contains(&t.expose()[4..]), "{r}");
        assert_eq!(r, "/api/hwz_…redacted/x");
        assert_eq!(redact_path("/a/hwz_/b"), "/a/hwz_…redacted/b");
        // Two values pasted together: neither survives.
        let twice = format!("/a/{}{}/b", t.expose(), t.expose());
        assert_eq!(redact_path(&twice), "/a/hwz_…redacted/b");
        // An admin key pasted into a URL, and a token percent-encoded.
        assert_eq!(redact_path("/a/hwzadm_Abc123/b"), "/a/hwzadm_…redacted/b");
        let encoded = format!("/a/hwz%5F{}/b", &t.expose()[4..]);
        assert_eq!(redact_path(&encoded), "/a/hwz%5F…redacted/b");
        let encoded = format!("/a/hwz%5f{}/b", &t.expose()[4..]);
        assert_eq!(redact_path(&encoded), "/a/hwz%5f…redacted/b");
        assert_eq!(redact_path("/a/hwzadm%5FAbc123"), "/a/hwzadm%5F…redacted");
    }

    #[test]
    fn a_long_path_is_logged_cut_with_what_was_left_out() {
        // A client may send a 32 KiB path: each access line and span would
        // carry it whole, whatever the request's answer.
        let long = format!("/api/{}", "a".repeat(5000));
        let r = redact_path(&long);
        assert!(r.len() < MAX_LOGGED_PATH + 40, "{}", r.len());
        assert!(
            r.ends_with(&format!("…(+{} bytes)", long.len() - MAX_LOGGED_PATH)),
            "{r}"
        );
        // Cut after redaction (a secret across the cut never shows) and
        // at a character's boundary.
        let t = crate::token::TokenSecret::generate().unwrap();
        let p = format!("/{}{}", "é".repeat(MAX_LOGGED_PATH / 2 - 3), t.expose());
        let r = redact_path(&p);
        assert!(!r.contains(&t.expose()[4..12]), "{r}");
        assert_eq!(redact_path("/short"), "/short");
        // Never half an escape: `\u{202e}` whole, or not at all.
        let p = format!("/{}\u{202e}x", "a".repeat(MAX_LOGGED_PATH - 4));
        let r = redact_path(&p);
        assert!(
            r.ends_with(&format!("{}…(+4 bytes)", "a".repeat(10))),
            "{r}"
        );
        assert!(!r.contains("\\u{20"), "{r}");
    }

    #[test]
    fn secrets_in_free_text_are_redacted() {
        let t = crate::token::TokenSecret::generate().unwrap();
        let t = t.expose();
        let cases = [
            (
                format!("bad token {t} here"),
                "bad token hwz_…redacted here".to_owned(),
            ),
            (t.to_owned(), "hwz_…redacted".to_owned()),
            (format!("a{t}{t}"), "ahwz_…redacted".to_owned()),
            (
                format!("header \"Bearer {t}\" sent"),
                "header \"Bearer …redacted\" sent".to_owned(),
            ),
            (
                "authorization: bearer   s3cr3t-value, next".to_owned(),
                "authorization: bearer   …redacted, next".to_owned(),
            ),
            (
                "BEARER hwzadm_AbC123 and hwzadm_x".to_owned(),
                "BEARER …redacted and hwzadm_…redacted".to_owned(),
            ),
            (
                "Bearer é€ after".to_owned(),
                "Bearer …redacted after".to_owned(),
            ),
            ("Bearer\tx".to_owned(), "Bearer\tx".to_owned()),
            // Basic user:password (base64 of `ci:hwz_ABC` and `u:p`).
            (
                "Authorization: Basic Y2k6aHd6X0FCQw== next".to_owned(),
                "Authorization: Basic …redacted next".to_owned(),
            ),
            ("basic dTpw".to_owned(), "basic …redacted".to_owned()),
            // Not a credential: the word, and base64 without a `:`.
            (
                "basic authentication failed".to_owned(),
                "basic authentication failed".to_owned(),
            ),
            ("Basic aGVsbG8=".to_owned(), "Basic aGVsbG8=".to_owned()),
            (
                "nothing secret here".to_owned(),
                "nothing secret here".to_owned(),
            ),
            ("Bearer ".to_owned(), "Bearer ".to_owned()),
            // A hint's placeholder is kept; a secret in backquotes is not.
            (
                "Send the admin key as `Authorization: Bearer <key>`.".to_owned(),
                "Send the admin key as `Authorization: Bearer <key>`.".to_owned(),
            ),
            (
                "sent `Authorization: Bearer s3cr3t`".to_owned(),
                "sent `Authorization: Bearer …redacted`".to_owned(),
            ),
            ("Bearer <s3cr3t".to_owned(), "Bearer …redacted".to_owned()),
            ("hwz".to_owned(), "hwz".to_owned()),
            ("ü hwz_ü".to_owned(), "ü hwz_…redactedü".to_owned()),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_secrets(&raw), want, "{raw:?}");
        }
        assert!(matches!(
            redact_secrets("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn values_under_a_configured_prefix_are_redacted_once_told() {
        let secret = "zzleak_4Ab9xQ2mR7tP1sK8wE3yU6iO0pL5jH2gF9dC";
        assert!(redact_secrets(secret).contains("4Ab9xQ"));
        also_redact("zzleak_");
        assert_eq!(redact_secrets(secret), "zzleak_…redacted");
        assert_eq!(
            redact_path(&format!("/x/{secret}/y")),
            "/x/zzleak_…redacted/y"
        );
        assert_eq!(redact_path("/x/hwz_abc"), "/x/hwz_…redacted");
    }
}
