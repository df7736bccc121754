//! The path normalizer: any string in, decoded segments or a refusal out,
//! never a panic. An accepted path can be read only one way: no segment is
//! empty, `.` or `..`, none holds `/` `\` `;` or a control character after
//! decoding, no decoded segment still looks percent-encoded, and none reads
//! as dots alone once spaces are trimmed or look-alike dots folded.
#![no_main]

use hawzu_gate::policy::rules::{MAX_SEGMENTS, Template, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Template::parse(raw);
    let Ok(path) = normalize(raw) else {
        return;
    };
    let segments = path.segments();
    assert!(segments.len() <= MAX_SEGMENTS);
    assert_eq!(segments.is_empty(), raw == "/");
    // Only `%xx` decoding changed anything: the raw path has one `/` more
    // than it has segment boundaries, and each raw segment decodes to ours.
    let raw_segments: Vec<&str> = if raw == "/" {
        Vec::new()
    } else {
        raw[1..].split('/').collect()
    };
    assert_eq!(raw_segments.len(), segments.len());
    for (raw_seg, seg) in raw_segments.iter().zip(segments) {
        assert!(!seg.is_empty() && seg != "." && seg != "..");
        // A server that trims Unicode spaces, or folds the look-alike dots
        // NFKC maps to `.` (full-width, small, leaders), reads no dot segment.
        let trimmed = seg.trim();
        assert!(trimmed != "." && trimmed != "..");
        let dot = |c: char| matches!(c, '.' | '\u{FF0E}' | '\u{FE52}' | '\u{2024}' | '\u{2025}');
        assert!(!(seg.chars().any(dot) && seg.chars().all(|c| c.is_whitespace() || dot(c))));
        assert!(!seg.contains(['/', '\\', ';', '\0']));
        assert!(!seg.bytes().any(|b| b < 0x20 || b == 0x7f));
        let b = seg.as_bytes();
        assert!(
            !b.windows(3)
                .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
        );
        if !raw_seg.contains('%') {
            assert_eq!(raw_seg, seg);
        }
        assert!(seg.len() <= raw_seg.len());
    }
});
