//! Logging set-up: tracing to stderr, human text or JSON lines, filtered by `log.level` (or
//! `RUST_LOG` when set).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogConfig;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let f = EnvFilter::new(&cfg.level);
        // PostgreSQL's NOTICEs (sqlx logs them at INFO) are not news: "relation
        // _sqlx_migrations already exists, skipping" on every start. A level that names sqlx
        // itself decides for itself.
        if cfg.level.contains("sqlx") {
            f
        } else {
            f.add_directive("sqlx::postgres::notice=warn".parse().expect("a valid directive"))
        }
    });
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if cfg.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
