//! [`Sessions`]: the console's sign-ins, in this gate's memory. A session
//! is found by the hash of its cookie value; it ends after
//! [`IDLE`] without use, [`MAX_AGE`] after sign-in, or at sign-out. Each
//! holds what its credential resolved to ([`SignedIn`]: the admin key, or
//! a manager token by its hash) and its CSRF token.
//!
//! Plain state: never the raw credential, never the store, no HTTP. On a
//! fleet, a session lives on the gate that signed it in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::token::TokenHash;
use crate::token::value::{RandomError, fill_base62};

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const MAX_AGE: Duration = Duration::from_secs(8 * 3600);
/// Sessions one gate keeps; past it, signing in ends the oldest.
pub const MAX_SESSIONS: usize = 1024;
/// Most sessions one caller (the admin key, or one token) holds at once;
/// a sign-in past it ends that caller's oldest.
pub const MAX_PER_CALLER: usize = 16;
/// Random base62 characters of a session id and of a CSRF token (~256 bits).
const RANDOM_LEN: usize = 43;
const HASH_CONTEXT: &str = "hawzu-gate console session v1";

/// What a session's credential resolved to at sign-in.
#[derive(Clone, PartialEq, Eq)]
pub enum SignedIn {
    /// The admin key.
    Admin,
    /// A workspace token with `tokens:manage`, by its hash: it is judged
    /// again (state, role, workspace) on every request of the session.
    Token(TokenHash),
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignedIn::Admin => f.write_str("Admin"),
            SignedIn::Token(_) => f.write_str("Token(…)"),
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A session as a request finds it.
#[derive(Clone)]
pub struct SessionView {
    pub signed_in: SignedIn,
    /// Who signed in, as the admin API names callers (`admin`, `token:…`).
    pub label: String,
    csrf: String,
    /// How long until the session ends at the latest.
    pub remaining: Duration,
}

impl std::fmt::Debug for SessionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionView")
            .field("signed_in", &self.signed_in)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl SessionView {
    /// The session's CSRF token, for the page that signed in.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether `presented` is the session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &[u8]) -> bool {
        self.csrf.as_bytes().ct_eq(presented).into()
    }
}

/// A new session: the cookie value (to the browser only) and the view.
pub struct Opened {
    pub cookie: String,
    pub view: SessionView,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

struct Entry {
    signed_in: SignedIn,
    label: String,
    /// The workspace of a token's session; `None`: the admin key's.
    workspace: Option<Box<str>>,
    /// Where it signed in from: the cookie works from there only.
    client: IpAddr,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// The session to end for a sign-in to a full gate: the oldest of the
/// workspace holding the most — however many tokens it signs in with, a
/// workspace pushes out only its own. The admin key's sessions (at most
/// [`MAX_PER_CALLER`]) make room only for the admin key (`for_admin`).
fn oldest_of_the_fullest(map: &HashMap<[u8; 32], Entry>, for_admin: bool) -> Option<[u8; 32]> {
    let mut held: HashMap<Option<&str>, usize> = HashMap::new();
    for e in map.values() {
        *held.entry(e.workspace.as_deref()).or_default() += 1;
    }
    let fullest = held
        .into_iter()
        .filter(|(w, _)| w.is_some() || for_admin)
        .max_by_key(|(_, n)| *n)
        .map(|(w, _)| w)?;
    map.iter()
        .filter(|(_, e)| e.workspace.as_deref() == fullest)
        .min_by_key(|(_, e)| e.created)
        .map(|(k, _)| *k)
}

/// The sign-ins of the console on this gate.
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Entry>>,
    idle: Duration,
    max_age: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(IDLE, MAX_AGE)
    }
}

impl Sessions {
    pub fn new(idle: Duration, max_age: Duration) -> Self {
        Self {
            by_hash: Mutex::new(HashMap::new()),
            idle,
            max_age,
        }
    }

    /// The longest a session lives (the cookie's `Max-Age`).
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Opens a session for `signed_in` (`label`, of `workspace`: `None` for
    /// the admin key), usable from `client` only.
    pub fn open(
        &self,
        signed_in: SignedIn,
        label: String,
        workspace: Option<&str>,
        client: IpAddr,
    ) -> Result<Opened, SessionError> {
        self.open_at(signed_in, label, workspace, client, Instant::now())
    }

    fn open_at(
        &self,
        signed_in: SignedIn,
        label: String,
        workspace: Option<&str>,
        client: IpAddr,
        now: Instant,
    ) -> Result<Opened, SessionError> {
        let cookie = random()?;
        let csrf = random()?;
        let mut map = self.by_hash.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, e| self.alive(e, now));
        // One caller past its share ends its own oldest session, not
        // another's: signing in over and over cannot push others out.
        let own = || map.iter().filter(|(_, e)| e.label == label);
        if own().count() >= MAX_PER_CALLER
            && let Some(oldest) = own().min_by_key(|(_, e)| e.created).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = oldest_of_the_fullest(&map, workspace.is_none())
        {
            map.remove(&oldest);
        }
        map.insert(
            hash(&cookie),
            Entry {
                signed_in: signed_in.clone(),
                label: label.clone(),
                workspace: workspace.map(Into::into),
                client,
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        Ok(Opened {
            cookie,
            view: SessionView {
                signed_in,
                label,
                csrf,
                remaining: self.max_age,
            },
        })
    }

    /// The live session of a cookie value presented from `client`, marked
    /// as used now. From another address the cookie is no session (a
    /// stolen cookie is worth nothing elsewhere), and the session stays for
    /// the address that signed in.
    pub fn find(&self, cookie: &str, client: IpAddr) -> Option<SessionView> {
        self.find_at(cookie, client, Instant::now())
    }

    fn find_at(&self, cookie: &str, client: IpAddr, now: Instant) -> Option<SessionView> {
        let key = hash(cookie);
        let mut map = self.by_hash.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.get_mut(&key)?;
        if !self.alive(entry, now) {
            map.remove(&key);
            return None;
        }
        if entry.client != client {
            return None;
        }
        entry.last_seen = now;
        Some(SessionView {
            signed_in: entry.signed_in.clone(),
            label: entry.label.clone(),
            csrf: entry.csrf.clone(),
            remaining: self
                .max_age
                .saturating_sub(now.saturating_duration_since(entry.created)),
        })
    }

    /// Ends the session of a cookie value; whether there was one.
    pub fn close(&self, cookie: &str) -> bool {
        let mut map = self.by_hash.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(&hash(cookie)).is_some()
    }

    /// Sessions open now (expired ones may still be counted until swept).
    pub fn len(&self) -> usize {
        self.by_hash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn alive(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_seen) < self.idle
            && now.saturating_duration_since(e.created) < self.max_age
    }
}

fn random() -> Result<String, RandomError> {
    let mut buf = [0u8; RANDOM_LEN];
    fill_base62(&mut buf)?;
    Ok(buf.iter().map(|&b| b as char).collect())
}

/// The key a session is kept under: the cookie value is never stored.
fn hash(cookie: &str) -> [u8; 32] {
    blake3::derive_key(HASH_CONTEXT, cookie.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_sign_out() {
        let s = Sessions::default();
        let opened = s.open(SignedIn::Admin, "admin".into(), None, HERE).unwrap();
        assert_eq!(opened.cookie.len(), RANDOM_LEN);
        let found = s.find(&opened.cookie, HERE).unwrap();
        assert_eq!(found.signed_in, SignedIn::Admin);
        assert!(found.csrf_matches(opened.view.csrf().as_bytes()));
        assert!(!found.csrf_matches(b"wrong"));
        assert!(s.find("not-a-session", HERE).is_none());
        assert!(s.close(&opened.cookie));
        assert!(s.find(&opened.cookie, HERE).is_none());
        assert!(!s.close(&opened.cookie));
    }

    #[test]
    fn a_session_ends_when_idle_and_at_its_maximum_age() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
        let t0 = Instant::now();
        let a = s
            .open_at(SignedIn::Admin, "admin".into(), None, HERE, t0)
            .unwrap();
        // Used every 50 s: alive until five minutes after sign-in.
        for i in 1..6 {
            assert!(
                s.find_at(&a.cookie, HERE, t0 + Duration::from_secs(50 * i))
                    .is_some()
            );
        }
        assert!(
            s.find_at(&a.cookie, HERE, t0 + Duration::from_secs(300))
                .is_none()
        );
        let b = s
            .open_at(SignedIn::Admin, "admin".into(), None, HERE, t0)
            .unwrap();
        assert!(
            s.find_at(&b.cookie, HERE, t0 + Duration::from_secs(61))
                .is_none()
        );
    }

    #[test]
    fn one_caller_signing_in_over_and_over_ends_only_its_own_sessions() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let admin = s
            .open_at(SignedIn::Admin, "admin".into(), None, HERE, t0)
            .unwrap();
        let mut flood = Vec::new();
        for i in 0..(MAX_SESSIONS as u64 + 50) {
            let at = t0 + Duration::from_millis(i + 1);
            let o = s
                .open_at(
                    SignedIn::Token(TokenHash([9; 32])),
                    "token:tok_f".into(),
                    Some("ws_1"),
                    HERE,
                    at,
                )
                .unwrap();
            flood.push(o.cookie);
        }
        let now = t0 + Duration::from_secs(2);
        assert!(
            s.find_at(&admin.cookie, HERE, now).is_some(),
            "the admin's session ended"
        );
        let alive = flood
            .iter()
            .filter(|c| s.find_at(c, HERE, now).is_some())
            .count();
        assert_eq!(alive, MAX_PER_CALLER);
        // Its newest are the ones kept.
        assert!(s.find_at(flood.last().unwrap(), HERE, now).is_some());
    }

    /// A workspace's manager token can make tokens to sign in with, one
    /// label each: a full gate ends the sessions of the fullest workspace,
    /// never the admin key's, nor another workspace's few.
    #[test]
    fn a_workspace_signing_in_with_many_tokens_ends_only_its_own_sessions() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let admin = s
            .open_at(SignedIn::Admin, "admin".into(), None, HERE, t0)
            .unwrap();
        let other = s
            .open_at(
                SignedIn::Token(TokenHash([8; 32])),
                "token:tok_other".into(),
                Some("ws_2"),
                HERE,
                t0,
            )
            .unwrap();
        let mut at = t0;
        for label in 0..(MAX_SESSIONS / MAX_PER_CALLER + 8) {
            for _ in 0..MAX_PER_CALLER {
                at += Duration::from_millis(1);
                s.open_at(
                    SignedIn::Token(TokenHash([9; 32])),
                    format!("token:tok_{label}"),
                    Some("ws_1"),
                    HERE,
                    at,
                )
                .unwrap();
            }
        }
        let now = at + Duration::from_secs(1);
        assert!(
            s.find_at(&admin.cookie, HERE, now).is_some(),
            "the admin's session was ended by one workspace"
        );
        assert!(
            s.find_at(&other.cookie, HERE, now).is_some(),
            "another workspace's session was ended"
        );
        assert!(s.len() <= MAX_SESSIONS);
    }

    #[test]
    fn a_cookie_works_only_from_the_address_that_signed_in() {
        let s = Sessions::default();
        let opened = s.open(SignedIn::Admin, "admin".into(), None, HERE).unwrap();
        let elsewhere: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(s.find(&opened.cookie, elsewhere).is_none());
        // And the session is still there for its own address.
        assert!(s.find(&opened.cookie, HERE).is_some());
    }

    #[test]
    fn debug_output_shows_no_cookie_csrf_or_token_hash() {
        let s = Sessions::default();
        let opened = s
            .open(
                SignedIn::Token(TokenHash([7; 32])),
                "token:tok_x".into(),
                Some("ws_1"),
                HERE,
            )
            .unwrap();
        let view = s.find(&opened.cookie, HERE).unwrap();
        let dump = format!("{s:?} {view:?}");
        assert!(!dump.contains(&opened.cookie), "{dump}");
        assert!(!dump.contains(opened.view.csrf()), "{dump}");
        assert!(dump.contains("Token(…)"), "{dump}");
        assert!(!dump.contains("0707"), "{dump}");
    }
}
