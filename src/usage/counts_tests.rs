//! Unit tests of `usage::counts`.
