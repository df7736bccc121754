//! Policy: roles and their permissions. Pure data; no I/O.

pub mod roles;
