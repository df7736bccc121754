//! Route rules and path handling.
//!
//! A rule is methods + a path template + the permission it needs. Rules are
//! ordered and the first whose method and template match wins; no match is a
//! deny (`no_matching_rule`), which is how tokens get no UI access.
//!
//! Paths are read exactly one way or refused: [`normalize`] turns the raw
//! request path into decoded segments and refuses anything a server behind
//! the gate could read differently (dot segments, encoded `/` `\` `.` or NUL,
//! `//`, a trailing `/`, `;` parameters, a raw space or `#`, double encoding, bad
//! percent-encoding, invalid UTF-8, and segments that read as dots once a
//! server trims spaces or folds Unicode). Nothing here does I/O.
//!
//! Over 500 lines on purpose: templates, matching and path normalization are
//! one contract (a path is normalized exactly as the templates match it) and
//! one fuzz target.

use std::borrow::Cow;
use std::fmt;

use http::Method;
use thiserror::Error;

use super::Access;
use super::ids::valid_id;
use super::roles::{Permission, PermissionError};

// === paths ===

/// Why a path was refused as ambiguous. The variants name the shape, for
/// logs and `explain`; every one is the deny code `ambiguous_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AmbiguousPath {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    #[error(
        "the path has a segment of dots alone once spaces (`+` too) and invisible characters are dropped or Unicode is folded (NFKC), like `..%20`, `..+` or full-width `．．`"
    )]
    LookAlikeDotSegment,
    #[error(
        "the path has a segment that is blank once spaces (`+` too) and invisible characters are dropped, like `%20` or `+`: a server that trims them reads an empty segment"
    )]
    LookAlikeEmptySegment,
    #[error(
        "the path has a character a server may read as `/`, `\\`, `%`, `;`, `#` or `?` once it folds Unicode (NFKC, like full-width `／`) or maps it to its code page (Windows best-fit: `∕`, `¥`, `₩`)"
    )]
    LookAlikeSeparator,
    #[error("the path has an encoded `/`, `\\`, `.` or NUL")]
    EncodedSeparator,
    #[error("the path has a backslash, NUL, control character, space, `#` or `;`")]
    ForbiddenCharacter,
    #[error("the path has a `%` not followed by two hex digits")]
    BadPercentEncoding,
    #[error("the path is percent-encoded twice")]
    DoubleEncoding,
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    #[error("the path has more than {MAX_SEGMENTS} segments")]
    TooLong,
}

/// Most segments a path may have.
pub const MAX_SEGMENTS: usize = 64;

impl AmbiguousPath {
    /// The doors' deny message for this reason: the code's own sentence
    /// and why (static: a refusal allocates nothing).
    pub fn message(&self) -> &'static str {
        macro_rules! because {
            ($why:literal) => {
                concat!(
                    "The request path could be read more than one way and is refused: ",
                    $why,
                    " (`hawzu-gate explain` shows the step)."
                )
            };
        }
        match self {
            Self::NotAbsolute => because!("it does not start with `/`"),
            Self::EmptySegment => because!("it has an empty segment (`//` or a trailing `/`)"),
            Self::DotSegment => because!("it has a `.` or `..` segment"),
            Self::LookAlikeDotSegment => because!(
                "a segment is dots alone once spaces (`+` too) or invisible characters are dropped or Unicode is folded (like `..%20`, `..+` or full-width `．．`)"
            ),
            Self::LookAlikeEmptySegment => because!(
                "a segment is blank once spaces (`+` too) or invisible characters are dropped (like `%20` or `+`): a server that trims them reads an empty segment"
            ),
            Self::LookAlikeSeparator => because!(
                "a character may be read as `/`, `\\`, `%`, `;`, `#` or `?` once Unicode is folded or mapped to a Windows code page (like full-width `／`)"
            ),
            Self::EncodedSeparator => because!("it has an encoded `/`, `\\`, `.` or NUL"),
            Self::ForbiddenCharacter => {
                because!("it has a backslash, control character, space, `#` or `;`")
            }
            Self::BadPercentEncoding => because!("a `%` is not followed by two hex digits"),
            Self::DoubleEncoding => because!("it is percent-encoded twice"),
            Self::NotUtf8 => because!("it does not decode to UTF-8"),
            Self::TooLong => because!("it has more than 64 segments"),
        }
    }
}

/// A path read exactly one way: its decoded segments (borrowed from the raw
/// path when nothing needed decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    segments: Vec<Cow<'a, str>>,
}

impl<'a> NormalPath<'a> {
    pub fn segments(&self) -> &[Cow<'a, str>] {
        &self.segments
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Reads a raw request path (no query) into segments, or refuses it.
pub fn normalize(raw: &str) -> Result<NormalPath<'_>, AmbiguousPath> {
    let rest = raw.strip_prefix('/').ok_or(AmbiguousPath::NotAbsolute)?;
    if rest.is_empty() {
        return Ok(NormalPath {
            segments: Vec::new(),
        });
    }
    let mut segments = Vec::with_capacity(12);
    // Split on `/` by hand: `str::split` sets up a searcher per segment,
    // which cost more than the segments' own checks.
    let mut rest = rest;
    loop {
        if segments.len() == MAX_SEGMENTS {
            return Err(AmbiguousPath::TooLong);
        }
        // A `/` is a char boundary: the slices cannot fail.
        match rest.bytes().position(|b| b == b'/') {
            Some(at) => {
                segments.push(segment(&rest[..at])?);
                rest = &rest[at + 1..];
            }
            None => {
                segments.push(segment(rest)?);
                break;
            }
        }
    }
    Ok(NormalPath { segments })
}

// Byte classes of a raw path segment, one bit each (`CLASS`).
const PLAIN: u8 = 1;
/// A raw space or `#` is never part of a request path (RFC 3986): a server
/// may end the path there, reading a shorter one than we judged. `\`, `;`,
/// controls and DEL are read differently by different servers.
const FORBIDDEN: u8 = 2;
const PERCENT: u8 = 4;
const DOT: u8 = 8;
/// Part of a non-ASCII character.
const HIGH: u8 = 16;
/// `+`: a space to a server that decodes a path as a form (PHP's
/// `urldecode`, Python's `unquote_plus`, Java's `URLDecoder`), so `..+`
/// reads as `.. ` there, and then as `..` to one that trims.
const PLUS: u8 = 32;

/// The class of every byte.
static CLASS: [u8; 256] = {
    let mut class = [PLAIN; 256];
    let mut b = 0;
    while b < 256 {
        class[b] = match b as u8 {
            b'\\' | b';' | b' ' | b'#' | 0..0x20 | 0x7f => FORBIDDEN,
            b'%' => PERCENT,
            b'.' => DOT,
            b'+' => PLUS,
            0x80.. => HIGH,
            _ => PLAIN,
        };
        b += 1;
    }
    class
};

fn segment(seg: &str) -> Result<Cow<'_, str>, AmbiguousPath> {
    if seg.is_empty() {
        return Err(AmbiguousPath::EmptySegment);
    }
    if seg == "." || seg == ".." {
        return Err(AmbiguousPath::DotSegment);
    }
    let bytes = seg.as_bytes();
    // One pass: which classes of byte the segment holds — what is refused
    // outright, and what the checks after it have to look at (most
    // segments: plain ASCII, no `%`, not all dots).
    let seen = bytes
        .iter()
        .fold(0u8, |seen, &b| seen | CLASS[usize::from(b)]);
    if seen & FORBIDDEN != 0 {
        return Err(AmbiguousPath::ForbiddenCharacter);
    }
    let percent = seen & PERCENT != 0;
    let ascii = seen & HIGH == 0;
    // Dots, and `+` if any (a space to some servers), alone.
    let dots_only = seen & DOT != 0 && seen & !(DOT | PLUS) == 0;
    if !percent {
        // ASCII with no space (refused above) reads as dots only when it
        // is dots (and `+`) alone; anything else is folded first.
        if ascii {
            if dots_only {
                return Err(AmbiguousPath::LookAlikeDotSegment);
            }
            if seen == PLUS {
                return Err(AmbiguousPath::LookAlikeEmptySegment);
            }
        } else {
            folded_reading(seg)?;
        }
        return Ok(Cow::Borrowed(seg));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            return Err(AmbiguousPath::BadPercentEncoding);
        };
        let (Some(h), Some(l)) = (hex(h), hex(l)) else {
            return Err(AmbiguousPath::BadPercentEncoding);
        };
        let b = h * 16 + l;
        match b {
            b'/' | b'\\' | b'.' | 0 => return Err(AmbiguousPath::EncodedSeparator),
            b';' => return Err(AmbiguousPath::ForbiddenCharacter),
            _ if b < 0x20 || b == 0x7f => return Err(AmbiguousPath::ForbiddenCharacter),
            _ => out.push(b),
        }
        i += 3;
    }
    // A decoded `%xx` would be decoded again by a server that decodes twice.
    if out
        .windows(3)
        .any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
    {
        return Err(AmbiguousPath::DoubleEncoding);
    }
    let decoded = String::from_utf8(out).map_err(|_| AmbiguousPath::NotUtf8)?;
    folded_reading(&decoded)?;
    Ok(Cow::Owned(decoded))
}

/// Whether a decoded segment reads as something other than a name to a
/// server that folds it: dots alone (`.`, `..`, `...`) once it trims or
/// drops spaces (`+` too, a space to a form decoder) and invisible characters, drops combining marks, folds
/// Unicode compatibility forms (NFKC: full-width `．`, `‥`, `﹒`) or drops
/// trailing dots (Windows) — `LookAlikeDotSegment`; or a non-ASCII
/// character read as a separator (`/`, `\`, `%`, `;`, `#`, `?`) once it
/// is folded (full-width `／`, `＼`, `％`; `￦` to `₩`) or mapped to a
/// Windows code page (best-fit: `∕`, `∖`, `⁄`, `⧵`, `⧸`, `⧹`, Arabic `٪`;
/// `¥` and `₩`, the backslash of the Japanese and Korean pages) —
/// `LookAlikeSeparator`; or blank once it trims (spaces, `+`, invisible
/// characters alone: `%20`, `+`) — `LookAlikeEmptySegment`, an empty
/// segment there. Either way such a server would read another path than
/// the rule that allowed it. ASCII `%`, `#` and `?` (decoded from `%25`,
/// `%23`, `%3F`) are the name's own. A C1 control (NEL too, which
/// Unicode counts as a space) is refused as any control is.
///
/// Hot path: a plain ASCII segment is one scan, no allocation; a segment
/// with non-ASCII characters is one more, each character decomposed
/// (NFKD: what NFKC composes back never makes a dot or an ASCII
/// separator), no buffer.
fn folded_reading(seg: &str) -> Result<(), AmbiguousPath> {
    let mut dots = false;
    if seg.is_ascii() {
        // NFKC leaves ASCII alone, and the only spaces left here are ` `
        // (decoded from `%20`) and `+` (a space to a form decoder):
        // controls were refused before.
        for b in seg.bytes() {
            match b {
                b'.' => dots = true,
                b' ' | b'+' => {}
                _ => return Ok(()),
            }
        }
        return Err(if dots {
            AmbiguousPath::LookAlikeDotSegment
        } else {
            AmbiguousPath::LookAlikeEmptySegment
        });
    }
    let mut name = false;
    for c in seg.chars() {
        if c.is_control() {
            return Err(AmbiguousPath::ForbiddenCharacter);
        }
        if c.is_ascii() {
            match c {
                '.' => dots = true,
                ' ' | '+' => {}
                _ => name = true,
            }
            continue;
        }
        if invisible(c) {
            continue;
        }
        let mut separator = best_fit_separator(c);
        unicode_normalization::char::decompose_compatible(c, |d| match d {
            '.' => dots = true,
            '+' => {}
            '/' | '\\' | '%' | ';' | '#' | '?' => separator = true,
            d if best_fit_separator(d) || d.is_control() => separator = true,
            d if invisible(d) => {}
            _ => name = true,
        });
        if separator {
            return Err(AmbiguousPath::LookAlikeSeparator);
        }
    }
    match (dots, name) {
        (_, true) => Ok(()),
        (true, false) => Err(AmbiguousPath::LookAlikeDotSegment),
        (false, false) => Err(AmbiguousPath::LookAlikeEmptySegment),
    }
}

/// Characters Windows' best-fit mappings turn into `/`, `\` or `%` that
/// NFKC leaves alone.
fn best_fit_separator(c: char) -> bool {
    matches!(
        c,
        '\u{2215}'
            | '\u{2216}'
            | '\u{2044}'
            | '\u{29F5}'
            | '\u{29F8}'
            | '\u{29F9}'
            | '\u{00A5}'
            | '\u{20A9}'
            | '\u{066A}'
    )
}

/// Characters a server may trim, drop or ignore in a name: Unicode
/// White_Space, zero-width and byte-order marks (trimmed by older .NET),
/// the soft hyphen, and combining marks.
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
        )
        || unicode_normalization::char::is_combining_mark(c)
}

// === queries ===

/// Whether a raw query (after `?`) carries a method override: a parameter
/// whose name is `_method` in any case — percent-encoded or not (decoded
/// until nothing changes, `+` as a space), with any mix of leading `_`,
/// `.`, `-` or spaces (PHP reads a leading space away and ` ` and `.` as
/// `_`), and any `[…]`, NUL (PHP ends a name there) or other control
/// byte after it. Rails, Laravel, Symfony and
/// Express `method-override` route such a request by that method.
/// Parameters are split at `&` and `;` (older parsers split at both).
///
/// Hot path: a query with no `%` and no `method` in any case is one scan,
/// no allocation.
pub fn names_method_override(query: &str) -> bool {
    let b = query.as_bytes();
    if !b.contains(&b'%') && !b.windows(6).any(|w| w.eq_ignore_ascii_case(b"method")) {
        return false;
    }
    query.split(['&', ';']).any(|param| {
        let name = param.split_once('=').map_or(param, |(n, _)| n);
        is_method_override_name(name.as_bytes())
    })
}

fn is_method_override_name(raw: &[u8]) -> bool {
    let mut name = Cow::Borrowed(raw);
    // Each round decodes one layer (`%255f` → `%5f` → `_`); four is more
    // than any server decodes.
    for _ in 0..4 {
        if !name.iter().any(|&b| b == b'%' || b == b'+') {
            break;
        }
        let decoded = decode_query_name(&name);
        if decoded == *name {
            break;
        }
        name = Cow::Owned(decoded);
    }
    // A name ends at a NUL where PHP reads it (strlen()), and at `[`
    // (arrays); any other control byte is cut there too: whoever reads
    // it, `_method` followed by a control is not a name to pass.
    let name = name
        .split(|&b| b == b'[' || b.is_ascii_control() && !b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    let name = name.trim_ascii_end();
    let rest = name
        .iter()
        .position(|&b| !matches!(b, b'_' | b'.' | b'-') && !b.is_ascii_whitespace())
        .map_or(&[][..], |i| &name[i..]);
    rest.len() < name.len() && rest.eq_ignore_ascii_case(b"method")
}

/// `%xx` decoded where it is one, `+` as a space, anything else kept.
fn decode_query_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let pair = (
            raw.get(i + 1).and_then(|&b| hex(b)),
            raw.get(i + 2).and_then(|&b| hex(b)),
        );
        match (raw[i], pair) {
            (b'%', (Some(h), Some(l))) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

// === methods ===

/// The methods rules may name, in bit order.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// A set of HTTP methods.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodSet(u8);

impl MethodSet {
    pub fn parse<'s>(names: impl IntoIterator<Item = &'s str>) -> Result<Self, RuleError> {
        let mut set = 0u8;
        for name in names {
            let i = METHODS
                .iter()
                .position(|m| m.as_str() == name)
                .ok_or_else(|| RuleError::Method(name.to_owned()))?;
            set |= 1 << i;
        }
        if set == 0 {
            return Err(RuleError::NoMethod);
        }
        Ok(Self(set))
    }

    pub fn contains(self, method: &Method) -> bool {
        self.0 & Self::bit(method) != 0
    }

    /// `method`'s bit; 0 for a method no set holds.
    pub(super) fn bit(method: &Method) -> u8 {
        METHODS
            .iter()
            .position(|m| m == method)
            .map_or(0, |i| 1 << i)
    }
}

impl fmt::Debug for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, m)| m.as_str())
            .collect();
        f.write_str(&names.join(","))
    }
}

// === templates ===

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(Box<str>),
    Workspace,
    Project,
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments; last only.
    Rest,
}

/// A path template: literal segments, `{workspace}`, `{project}`, `*`, `**`.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    text: Box<str>,
    segs: Box<[Seg]>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A rule that cannot be used. Messages say what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    #[error("template `{0}` must start with `/` and have no empty segments")]
    Shape(String),
    #[error("template `{0}`: `**` may only be the last segment")]
    RestNotLast(String),
    #[error("template `{0}`: `{1}` is captured twice")]
    Twice(String, &'static str),
    #[error(
        "template `{0}`: `{1}` is not a segment; use literals, {{workspace}}, {{project}}, * or **"
    )]
    Segment(String, String),
    #[error("`{0}` is not a method; use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS")]
    Method(String),
    #[error("a rule needs at least one method")]
    NoMethod,
    #[error("permission: {0}")]
    Permission(#[from] PermissionError),
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let shape = || RuleError::Shape(text.to_owned());
        let rest = text.strip_prefix('/').ok_or_else(shape)?;
        let mut segs = Vec::new();
        if !rest.is_empty() {
            for s in rest.split('/') {
                let seg = match s {
                    "" => return Err(shape()),
                    "{workspace}" => Seg::Workspace,
                    "{project}" => Seg::Project,
                    "*" => Seg::One,
                    "**" => Seg::Rest,
                    lit => {
                        // A literal must itself be a normal segment.
                        let ok = !lit.contains(['{', '}', '*', '%'])
                            && segment(lit).is_ok_and(|c| matches!(c, Cow::Borrowed(_)));
                        if !ok {
                            return Err(RuleError::Segment(text.to_owned(), lit.to_owned()));
                        }
                        Seg::Literal(lit.into())
                    }
                };
                if matches!(segs.last(), Some(Seg::Rest)) {
                    return Err(RuleError::RestNotLast(text.to_owned()));
                }
                for (kind, name) in [(Seg::Workspace, "{workspace}"), (Seg::Project, "{project}")] {
                    if seg == kind && segs.contains(&kind) {
                        return Err(RuleError::Twice(text.to_owned(), name));
                    }
                }
                segs.push(seg);
            }
        }
        Ok(Self {
            text: text.into(),
            segs: segs.into(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches decoded segments; returns the captures. A capture must be an
    /// id (`A-Z a-z 0-9 _ -`, as ids are validated at creation), so it was
    /// never percent-decoded and borrows from the raw path; a path whose
    /// shape fits but whose capture is no id is [`Fit::NotAnId`].
    fn capture<'p>(&self, path: &[Cow<'p, str>]) -> Fit<'p> {
        // Match the shape first; check captured ids only once it matched
        // (most rules fail on a literal, and cheaply).
        let (mut workspace, mut project) = (None, None);
        let mut i = 0;
        let mut rest = false;
        for seg in self.segs.iter() {
            match seg {
                Seg::Rest => {
                    rest = true;
                    break;
                }
                _ if i == path.len() => return Fit::No,
                Seg::Literal(l) if **l == *path[i] => {}
                Seg::Literal(_) => return Fit::No,
                Seg::Workspace => workspace = Some(i),
                Seg::Project => project = Some(i),
                Seg::One => {}
            }
            i += 1;
        }
        if !rest && i != path.len() {
            return Fit::No;
        }
        let id = |at: Option<usize>| -> Result<Option<&'p str>, ()> {
            match at.map(|i| &path[i]) {
                None => Ok(None),
                Some(Cow::Borrowed(s)) if valid_id(s) => Ok(Some(*s)),
                Some(_) => Err(()),
            }
        };
        match (id(workspace), id(project)) {
            (Ok(workspace), Ok(project)) => Fit::Captured(Captures { workspace, project }),
            _ => Fit::NotAnId,
        }
    }
}

impl Template {
    /// Whether some path `later` matches also fits this template's shape
    /// with a literal of `later` that is no id where this template captures
    /// `{workspace}` or `{project}`: that capture and the literal.
    fn captures_a_non_id_of(&self, later: &Template) -> Option<(&'static str, String)> {
        let mut witness = None;
        let mut k = 0;
        loop {
            match (self.segs.get(k), later.segs.get(k)) {
                // This one takes the rest: the shapes meet.
                (Some(Seg::Rest), _) | (None, Some(Seg::Rest)) => return witness,
                (None, None) => return witness,
                // `later` takes the rest: a path of this one's length is one.
                (Some(_), Some(Seg::Rest)) => return witness,
                (None, Some(_)) | (Some(_), None) => return None,
                (Some(Seg::Literal(a)), Some(Seg::Literal(b))) if a != b => return None,
                // The later rule's capture takes ids only: never this one.
                (Some(Seg::Literal(l)), Some(Seg::Workspace | Seg::Project)) if !valid_id(l) => {
                    return None;
                }
                (Some(s @ (Seg::Workspace | Seg::Project)), Some(Seg::Literal(l)))
                    if !valid_id(l) =>
                {
                    let capture = if *s == Seg::Workspace {
                        "{workspace}"
                    } else {
                        "{project}"
                    };
                    witness.get_or_insert((capture, l.to_string()));
                }
                _ => {}
            }
            k += 1;
        }
    }
}

/// How a path fits a template.
enum Fit<'p> {
    No,
    Captured(Captures<'p>),
    /// The shape fits, but a `{workspace}` or `{project}` segment is no id
    /// (percent-encoded, or with a character ids never hold): the API may
    /// read it as one (`p%31` is `p1` decoded, `p1.json` is `p1` to a
    /// framework that strips a format), so no later, looser rule judges
    /// it — the walk ends with no rule.
    NotAnId,
}

/// What a template captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Captures<'p> {
    pub workspace: Option<&'p str>,
    pub project: Option<&'p str>,
}

// === rules ===

/// One route rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub methods: MethodSet,
    pub template: Template,
    /// The permission it needs, or `public`.
    pub access: Access,
    /// Where the rule came from (`policy.rules[2]`, `default`), for explain.
    pub origin: String,
}

/// The first rule that matched, with its captures.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'r, 'p> {
    pub rule: &'r Rule,
    pub captures: Captures<'p>,
}

/// An ordered rule list; the first match wins.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Whether any rule is public (a request without a token skips the
    /// rule walk when none is).
    public: bool,
    /// Tells this set from every other made in the process (copies share
    /// it): the per-thread remembered walks (`memo.rs`) are keyed by it.
    generation: u64,
}

/// Resources of the built-in `…/projects/{project}/<R>/**` rules.
const PROJECT_RESOURCES: [&str; 6] = [
    "testcases",
    "testplans",
    "executions",
    "defects",
    "requirements",
    "reports",
];

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static MADE: AtomicU64 = AtomicU64::new(0);
        let public = rules.iter().any(|r| r.access == Access::Public);
        Self {
            rules,
            public,
            generation: MADE.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Which set this is (see the field).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether any rule says `access = "public"`.
    pub fn has_public(&self) -> bool {
        self.public
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Rules that check no workspace: a `{project}` capture without a
    /// `{workspace}` one. A project token is granted project ids, not
    /// workspaces' projects, so on such a rule a token of any workspace
    /// that names the project id is allowed; the API must check the
    /// project against `X-Hawzu-Workspace-Id`. One warning per rule,
    /// naming it; none for the built-in set.
    pub fn warnings(&self) -> Vec<String> {
        let mut said: Vec<String> = self
            .rules
            .iter()
            .filter(|r| {
                let segs = &r.template.segs;
                r.access != Access::Public
                    && segs.contains(&Seg::Project)
                    && !segs.contains(&Seg::Workspace)
            })
            .map(|r| {
                format!(
                    "{} (`{}`) captures {{project}} but no {{workspace}}: a project token of any workspace that names the project id is allowed by it; capture {{workspace}} too, or make sure the API checks the project against X-Hawzu-Workspace-Id",
                    r.origin, r.template.text
                )
            })
            .collect();
        // A rule an earlier one shadows through a capture of no id.
        for (j, later) in self.rules.iter().enumerate() {
            let earlier = self.rules[..j].iter().find_map(|r| {
                (r.methods.0 & later.methods.0 != 0)
                    .then(|| r.template.captures_a_non_id_of(&later.template))
                    .flatten()
                    .map(|(capture, literal)| (r, capture, literal))
            });
            if let Some((r, capture, literal)) = earlier {
                said.push(format!(
                    "{} (`{}`) is never reached for the paths where {} (`{}`) captures {capture} `{literal}`, which is no id: a path that fits a capturing rule but is no id there matches no rule; put {} first",
                    later.origin, later.template.text, r.origin, r.template.text, later.origin
                ));
            }
        }
        said
    }

    /// The built-in rules for the Hawzu REST API (docs/design.md).
    pub fn defaults() -> Self {
        let ws = "/api/v1/workspaces/{workspace}";
        let own = |s: &str| s.to_owned();
        // template, GET/HEAD, POST/PUT/PATCH, DELETE
        let mut rows: Vec<(String, String, String, Option<String>)> = vec![
            (own(ws), own("workspace:read"), own("workspace:write"), None),
            (
                format!("{ws}/projects"),
                own("projects:read"),
                own("projects:write"),
                None,
            ),
            (
                format!("{ws}/projects/{{project}}"),
                own("projects:read"),
                own("projects:write"),
                Some(own("projects:delete")),
            ),
        ];
        for r in PROJECT_RESOURCES {
            rows.push((
                format!("{ws}/projects/{{project}}/{r}/**"),
                format!("{r}:read"),
                format!("{r}:write"),
                Some(format!("{r}:delete")),
            ));
        }
        for (r, read) in [("members", "members:read"), ("settings", "settings:read")] {
            let manage = format!("{r}:manage");
            rows.push((
                format!("{ws}/{r}/**"),
                own(read),
                manage.clone(),
                Some(manage),
            ));
        }

        let mut rules = Vec::new();
        for (template, read, write, delete) in rows {
            let groups: [(&[&str], Option<&String>); 3] = [
                (&["GET", "HEAD"], Some(&read)),
                (&["POST", "PUT", "PATCH"], Some(&write)),
                (&["DELETE"], delete.as_ref()),
            ];
            for (methods, perm) in groups {
                let Some(perm) = perm else { continue };
                // The built-in table is fixed and valid (checked by this
                // module's tests), so nothing is dropped here.
                if let (Ok(methods), Ok(template), Ok(permission)) = (
                    MethodSet::parse(methods.iter().copied()),
                    Template::parse(&template),
                    Permission::parse(perm),
                ) {
                    rules.push(Rule {
                        methods,
                        template,
                        access: Access::Permission(permission),
                        origin: "default".into(),
                    });
                }
            }
        }
        Self::new(rules)
    }

    /// The first rule matching `method` and the decoded `path` (none when
    /// the first whose shape fits captures a segment that is no id).
    pub fn find<'r, 'p>(
        &'r self,
        method: &Method,
        path: &NormalPath<'p>,
    ) -> Option<Matched<'r, 'p>> {
        let segs = path.segments();
        // The method is looked up once, not once per rule.
        let bit = MethodSet::bit(method);
        for rule in self.rules.iter() {
            if rule.methods.0 & bit == 0 {
                continue;
            }
            match rule.template.capture(segs) {
                Fit::No => {}
                Fit::Captured(captures) => return Some(Matched { rule, captures }),
                Fit::NotAnId => return None,
            }
        }
        None
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
