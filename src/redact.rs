//! Redaction: secrets never reach a log, an error or an answer. Token
//! values, admin keys, bearer credentials and URL passwords are replaced,
//! keeping enough of the shape (the prefix, the user) for a reader to know
//! what was there. Pure text functions; imports nothing of the crate.

/// A URL with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{}://{user}:***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A path with anything shaped like a token value replaced, so a secret
/// pasted into a URL never reaches a log.
pub fn redact_path(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains("hwz_") {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find("hwz_") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 4..];
        // `_` too: two values pasted together are one run, both redacted.
        let run = tail
            .bytes()
            .take_while(|&b| b.is_ascii_alphanumeric() || b == b'_')
            .count();
        out.push_str("hwz_…redacted");
        rest = &tail[run..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Text with every secret-shaped part replaced by `…redacted`: token values
/// (`hwz_` + base62), admin keys (`hwzadm_` + base62), and whatever follows
/// `Bearer ` (any case) up to whitespace, a quote, a backslash or a comma.
/// A `hwz_` run takes `_` too, so values pasted together all go.
/// The prefixes stay, so a reader still sees what kind of value it was.
pub fn redact_secrets(text: &str) -> std::borrow::Cow<'_, str> {
    const REDACTED: &str = "…redacted";
    let lower = text.to_ascii_lowercase();
    let (lb, tb) = (lower.as_bytes(), text.as_bytes());
    if !lower.contains("hwz") && !lower.contains("bearer ") {
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
        } else if rest.starts_with(b"hwzadm_") {
            Some((
                i + 7,
                run(i + 7, |b| b.is_ascii_alphanumeric() || b == b'_'),
            ))
        } else if rest.starts_with(b"hwz_") {
            Some((
                i + 4,
                run(i + 4, |b| b.is_ascii_alphanumeric() || b == b'_'),
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
}
