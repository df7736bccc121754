//! The rule walk's answers remembered per thread: a path the gate has
//! judged is not read and matched again. Reading a path (split, checked,
//! decoded) and walking the rules cost ~1.5k of the ~21k instructions a
//! forward-auth answer takes (benches/load/instructions.py); looking the
//! answer up costs a hash and a compare of the path.
//!
//! Exact by construction: the key is the raw path, byte for byte, the
//! method's bit (the only part of the method the walk reads) and the rule
//! set's generation (a reloaded policy is a new set); the answer is the
//! rule's index and where in the path the template's captures lie, sliced
//! again from the request's own path. Only paths that read cleanly are
//! kept: a refused path is read every time, for its reason. Bounded:
//! [`SLOTS`] entries per thread, paths of up to [`LONGEST`] bytes, a new
//! entry replacing whatever held its slot.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::ops::Range;

use http::Method;

use super::rules::{AmbiguousPath, Captures, Matched, MethodSet, RuleSet, normalize};

/// Entries per thread.
pub const SLOTS: usize = 256;
/// The longest path kept.
pub const LONGEST: usize = 512;

struct Entry {
    generation: u64,
    method: u8,
    path: Box<str>,
    /// `None`: no rule matched.
    found: Option<Kept>,
}

/// The rule that matched (its index), and its captures as ranges of the
/// path.
#[derive(Clone)]
struct Kept {
    rule: usize,
    workspace: Option<Range<usize>>,
    project: Option<Range<usize>>,
}

thread_local! {
    static MEMO: RefCell<Box<[Option<Entry>]>> =
        RefCell::new((0..SLOTS).map(|_| None).collect());
}

impl RuleSet {
    /// [`normalize`] then [`RuleSet::find`], the answer remembered on this
    /// thread for the next request with the same raw path and method.
    pub fn find_raw<'r, 'p>(
        &'r self,
        method: &Method,
        raw: &'p str,
    ) -> Result<Option<Matched<'r, 'p>>, AmbiguousPath> {
        if raw.len() > LONGEST {
            return self.walk(method, raw);
        }
        let bit = MethodSet::bit(method);
        let slot = foldhash::fast::FixedState::default().hash_one((bit, raw)) as usize % SLOTS;
        let hit = MEMO.with_borrow(|memo| match &memo[slot] {
            Some(e) if e.generation == self.generation() && e.method == bit && *e.path == *raw => {
                Some(e.found.clone())
            }
            _ => None,
        });
        if let Some(found) = hit {
            let Some(Kept {
                rule,
                workspace,
                project,
            }) = found
            else {
                return Ok(None);
            };
            // Ranges of these very bytes: always in bounds and on char
            // boundaries; the walk answers if they were ever not.
            let slice = |r: Option<Range<usize>>| match r {
                None => Some(None),
                Some(r) => raw.get(r).map(Some),
            };
            if let (Some(rule), Some(workspace), Some(project)) =
                (self.rules().get(rule), slice(workspace), slice(project))
            {
                return Ok(Some(Matched {
                    rule,
                    captures: Captures { workspace, project },
                }));
            }
        }
        let found = self.walk(method, raw)?;
        let kept = match &found {
            None => Some(None),
            Some(m) => self.index_of(m.rule).and_then(|rule| {
                Some(Some(Kept {
                    rule,
                    workspace: within(raw, m.captures.workspace)?,
                    project: within(raw, m.captures.project)?,
                }))
            }),
        };
        if let Some(found) = kept {
            MEMO.with_borrow_mut(|memo| {
                memo[slot] = Some(Entry {
                    generation: self.generation(),
                    method: bit,
                    path: raw.into(),
                    found,
                });
            });
        }
        Ok(found)
    }

    fn walk<'r, 'p>(
        &'r self,
        method: &Method,
        raw: &'p str,
    ) -> Result<Option<Matched<'r, 'p>>, AmbiguousPath> {
        let path = normalize(raw)?;
        Ok(self.find(method, &path))
    }

    fn index_of(&self, rule: &super::rules::Rule) -> Option<usize> {
        self.rules().iter().position(|r| std::ptr::eq(r, rule))
    }
}

/// Where `part` (a capture: borrowed from `raw`) lies in `raw`; `Some(None)`
/// for no capture, `None` if it is not a slice of `raw`.
#[allow(clippy::option_option)]
fn within(raw: &str, part: Option<&str>) -> Option<Option<Range<usize>>> {
    let Some(part) = part else {
        return Some(None);
    };
    let start = (part.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= raw.len()).then_some(Some(start..end))
}

/// Whether this thread keeps an answer for `path` (for tests).
#[cfg(test)]
fn holds(path: &str) -> bool {
    MEMO.with_borrow(|memo| memo.iter().flatten().any(|e| *e.path == *path))
}

#[cfg(test)]
#[path = "memo_tests.rs"]
mod tests;
