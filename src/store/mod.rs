//! PostgreSQL: the pool, database creation and migrations. All SQL lives under this module.
//!
//! Queries use bound parameters only. Handlers call the functions here; they never build SQL.

pub mod after_sales;
pub mod batch;
pub mod calendar;
pub mod deliveries;
pub mod follow_ups;
pub mod forecast_settings;
pub mod forecasts;
pub mod history;
pub mod kpis;
pub mod merchant_api;
pub mod merchants;
pub mod orders;
pub mod outbox;
pub mod pipeline;
pub mod samples;
pub mod settlement;
pub mod shipments;

use std::time::Duration;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgPool,
};

/// What a database error says about the input that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The values written were refused for what they are (SQLSTATE class 22: out of range,
    /// invalid text, bad date; or a CHECK on an input column): retrying cannot help, so the
    /// message is refused with this code.
    Input(&'static str),
    /// A CHECK on a status or kind column: souk wrote a state that does not exist. A bug, not
    /// bad input: dead-lettered and logged at ERROR.
    Bug,
}

/// Classifies a database error ([`Fault`]); `None` for everything a retry may cure
/// (connections, deadlocks, serialisation, timeouts).
pub fn fault(e: &sqlx::Error) -> Option<Fault> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    let code = db.code()?;
    if code.starts_with("22") {
        return Some(Fault::Input(match code.as_ref() {
            "22003" => "value_out_of_range",
            "22007" | "22008" => "invalid_date",
            "22021" | "22P05" => "invalid_characters",
            _ => "invalid_value",
        }));
    }
    if code == "23514" {
        let name = db.constraint().unwrap_or_default();
        return Some(if name.contains("status") || name.contains("kind") {
            Fault::Bug
        } else {
            Fault::Input("invalid_value")
        });
    }
    None
}

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool on `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url, max_connections, false).await
}

/// Opens a pool on `url`; with `transaction_pooler`, for a transaction-mode pooler that does
/// not carry prepared statements (PgBouncer before 1.21).
///
/// sqlx prepares every statement under a name, even with its statement cache off, and sends
/// Parse/Describe and Bind/Execute each with their own Sync; a transaction pooler may hand the
/// server connection to another client between the two, or two clients' `sqlx_s_1` meet on
/// one server (`42P05 prepared statement already exists`). So here each lending of a pooled
/// connection opens a transaction, which pins one server connection for it, and first drops
/// whatever statements earlier clients left on that server (`BEGIN; DEALLOCATE ALL`, one
/// simple query); `COMMIT` when it comes back. A statement run on the pool alone is then in a
/// transaction of its own, as in autocommit; `pool.begin()` inside it draws a warning from
/// PostgreSQL and commits as it would, and its `COMMIT` ends the pin, after its last
/// statement. The statement cache is off: a cached name would outlive its server. Costs two
/// round trips per lending.
const PIN: &str = "BEGIN; DEALLOCATE ALL";

pub async fn connect_with(
    url: &str,
    max_connections: u32,
    transaction_pooler: bool,
) -> Result<PgPool, sqlx::Error> {
    let mut opts: PgConnectOptions = url
        .parse::<PgConnectOptions>()?
        .log_statements(tracing::log::LevelFilter::Trace);
    let mut pool = PgPoolOptions::new();
    if transaction_pooler {
        use sqlx::Executor;
        opts = opts.statement_cache_capacity(0);
        // A new connection is lent without passing `before_acquire`.
        pool = pool
            .after_connect(|conn, _| Box::pin(async move { conn.execute(PIN).await.map(|_| ()) }))
            .before_acquire(|conn, _| Box::pin(async move { conn.execute(PIN).await.map(|_| true) }))
            .after_release(|conn, _| Box::pin(async move { conn.execute("COMMIT").await.map(|_| true) }));
    }
    pool.max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings every connection before lending it by default: a round trip per query.
        // A dead connection fails its query instead, and the job is retried.
        .test_before_acquire(false)
        .connect_with(opts)
        .await
}

/// Creates the database named in `url` when it does not exist (connecting to `postgres`).
pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    let name = opts.get_database().unwrap_or("postgres").to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&opts.clone().database("postgres")).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        // Identifiers cannot be bound parameters; quote it as an identifier instead.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => {}
            // Another process created it meanwhile.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Drops the database named in `url` (closing its other sessions), if it exists.
pub async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    let name = opts.get_database().unwrap_or("postgres").to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&opts.clone().database("postgres")).await?;
    // Identifiers cannot be bound parameters; quote it as an identifier instead.
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}

/// Creates the database if needed and applies pending migrations.
pub async fn migrate(url: &str) -> Result<PgPool, anyhow::Error> {
    use anyhow::Context;
    ensure_database(url).await.context("creating the database")?;
    let pool = connect(url, 2).await.context("connecting to the database")?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}
