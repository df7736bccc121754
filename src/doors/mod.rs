//! Front doors: each translates its protocol into request facts, calls
//! [`crate::decide::decide`], and renders the decision. No policy lives here.

pub mod forward_auth;
pub(crate) mod http;
