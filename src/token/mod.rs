//! Access tokens: the value a client presents (format, checksum, hash), the
//! record the gate keeps, and expiry. Pure data and validation, no I/O.

pub mod change;
pub mod context;
pub mod expiry;
pub mod record;
pub mod value;

pub use change::{ChangeRefusal, RotateToken, RotationLimits, UpdateToken, overlap_ended};
pub use context::ContextLimits;
pub use expiry::{ExpiryError, ExpirySpec, short_duration};
pub use record::{
    CreateToken, FieldErrors, ProjectGrant, Scope, TokenKind, TokenRecord, TokenState, ValidCreate,
};
pub use value::{ParseError, TokenHash, TokenId, TokenSecret};
