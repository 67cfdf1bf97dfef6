//! Calls to the outside world over HTTP: the payment provider, tracking providers and merchant
//! webhook endpoints.
//!
//! Owns request shapes, timeouts, idempotency headers and the SSRF guard. Decisions about what
//! to call belong to `domain`; what to record belongs to `store`.

pub mod payment;
pub mod tracking;
pub mod webhook;
