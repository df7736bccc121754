//! Header names the gate reads and writes, in one place so that code, tests
//! and docs cannot drift.

/// Prefix of the identity headers; every incoming header with it is removed.
pub const IDENTITY_PREFIX: &str = "x-hawzu-";
/// The token's public id.
pub const TOKEN_ID: &str = "x-hawzu-token-id";
/// `workspace` or `project`.
pub const TOKEN_TYPE: &str = "x-hawzu-token-type";
/// The token's workspace.
pub const WORKSPACE_ID: &str = "x-hawzu-workspace-id";
/// The deny code, on every refusal.
pub const ERROR: &str = "x-hawzu-error";
/// Kept when the client sent one, generated otherwise.
pub const REQUEST_ID: &str = "x-request-id";

/// The realm of every `WWW-Authenticate` challenge.
pub const REALM: &str = "hawzu";
