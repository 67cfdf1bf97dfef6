//! souk: the fulfilment back end of a multi-merchant marketplace.
//!
//! A fleet of apalis workers reads jobs from Redis Streams and records results in PostgreSQL.
//!
//! # Layout
//! - [`domain`]: pure rules and calculations (retry schedules, ...); no IO.
//! - [`queue`]: the Redis Streams queue under apalis: producer, backend, acks, dead letters, cron.
//! - [`store`]: all SQL, the pool and migrations.
//! - [`enqueue`]: every pipeline job's contract (queue, arguments, idempotency key) and typed pushes.
//! - [`orders`]: the order services: storefront commands, payment confirmation and reservation,
//!   the payment adjustment, decisions and deadlines, cancellation, the sweep.
//! - [`shipping`], [`notify`], [`settlement`], [`forecast`], [`samples`]: the other services
//!   (tracking polls, webhook deliveries, payouts and KPIs, forecast runs, the sample job).
//! - [`jobs`]: one file per job: its queue, the handler (decode → service) and registration;
//!   no SQL.
//! - [`faults`]: crash points for fault-injection tests (debug builds only).
//! - [`http`]: the ops server (health, readiness, metrics).
//! - [`app`]: connections and the worker fleet of one process.
//! - [`config`]: layered, validated configuration.
//! - [`bench`], [`demo`]: `souk bench …` and `souk demo`.
//!
//! The `souk` binary (`workers/main.rs`) parses the command line, handles signals and starts
//! what is asked for.

pub mod admin;
pub mod app;
pub mod bench;
pub mod config;
pub mod demo;
pub mod domain;
pub mod enqueue;
pub mod faults;
pub mod forecast;
pub mod http;
pub mod integrations;
pub mod jobs;
pub mod merchant_api;
pub mod notify;
pub mod orders;
pub mod outcomes;
pub mod queue;
pub mod samples;
pub mod sandbox;
pub mod settlement;
pub mod shipping;
pub mod store;
pub mod telemetry;
