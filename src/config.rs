//! Configuration: embedded defaults, then `config/<env>.toml`, then `SOUK_*` variables.
//!
//! Owns loading, layering and validation. It must not open connections or read anything but the
//! files and variables named here. Secrets (database and Redis passwords) are redacted by
//! [`redact_url`] wherever configuration is printed or logged.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;

/// The defaults, every key commented, compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: cannot parse {source_name}: {message}")]
    Parse { source_name: String, message: String },
    #[error("config: invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// A key that does not exist or has the wrong type, with where it was set.
    #[error("config: `{key}` in {origin}: {message}")]
    Key {
        key: String,
        origin: String,
        message: String,
    },
}

/// Everything souk reads at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub redis: RedisConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub ops: OpsConfig,
    pub worker: WorkerConfig,
    pub queue: QueueConfig,
    #[serde(default)]
    pub queues: BTreeMap<String, QueueOverrides>,
    pub cron: CronConfig,
    pub marketplace: MarketplaceConfig,
    pub payment: PaymentConfig,
    pub webhooks: WebhooksConfig,
    pub admin: AdminConfig,
    pub merchant_api: MerchantApiConfig,
    pub forecast: ForecastConfig,
    pub tracking: TrackingConfig,
    pub after_sales: AfterSalesConfig,
}

/// A secret value: shown as `***` by `Debug`, so a logged config never leaks it.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketplaceConfig {
    pub currency: String,
    pub unpaid_timeout_s: u64,
    pub payment_recheck_ms: u64,
    pub reservation_ttl_s: u64,
    pub follow_up_grace_s: u64,
    pub command_wait_s: u64,
    pub outcome_stream_maxlen: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    pub provider: String,
    pub base_url: String,
    pub api_key: Secret,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub schedule_s: Vec<u64>,
    pub timeout_ms: u64,
    pub disable_after_hours: u64,
    pub allow_private_targets: bool,
    pub max_in_flight_per_merchant: u32,
    /// An HTTP(S) proxy for webhook deliveries; empty: none. Proxy variables of the
    /// environment (`HTTP_PROXY`, ...) are never used for webhooks.
    #[serde(default)]
    pub proxy: String,
}

/// Courier tracking (see `[tracking]` in config/default.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    pub provider: String,
    pub base_url: String,
    pub api_key: Secret,
    pub customer: String,
    pub timeout_ms: u64,
    pub poll_imminent_s: u64,
    pub poll_moving_s: u64,
    pub poll_quiet_s: u64,
    pub quiet_after_s: u64,
    pub poll_unscanned_s: u64,
    pub rate_per_s: u32,
    pub no_news_exception_s: u64,
    pub no_info_expire_s: u64,
    pub complete_after_delivery_s: u64,
    pub ship_by_s: u64,
    pub webhook_secret: Secret,
}

impl TrackingConfig {
    pub fn poll_policy(&self) -> crate::domain::tracking::poll::PollPolicy {
        crate::domain::tracking::poll::PollPolicy {
            imminent_s: self.poll_imminent_s,
            moving_s: self.poll_moving_s,
            quiet_s: self.poll_quiet_s,
            quiet_after_s: self.quiet_after_s,
            unscanned_s: self.poll_unscanned_s,
        }
    }

    pub fn silence_rules(&self) -> crate::domain::tracking::poll::SilenceRules {
        crate::domain::tracking::poll::SilenceRules {
            no_info_expire_s: self.no_info_expire_s,
            no_news_exception_s: self.no_news_exception_s,
        }
    }
}

/// Returns and complaints (see `[after_sales]` in config/default.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterSalesConfig {
    pub return_window_s: u64,
    pub return_response_s: u64,
    pub return_default: String,
    pub complaint_reply_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub token: Secret,
}

/// The merchant API's own listener (see `[merchant_api]` in config/default.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantApiConfig {
    pub listen: String,
    pub requests_per_minute: u32,
    pub action_wait_ms: u64,
    pub address_visible_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
    pub cluster: bool,
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub migrate_url: String,
    pub transaction_pooler: bool,
    pub max_connections: u32,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub shutdown_timeout_ms: u64,
    pub startup_wait_s: u64,
}

/// Queue settings; see `config/default.toml` for the meaning and unit of each.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub concurrency: usize,
    pub batch_size: usize,
    pub block_ms: u64,
    pub claim_idle_ms: u64,
    pub max_deliveries: u32,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    pub timeout_ms: u64,
    pub dead_retention_hours: u64,
    pub idempotency_window_s: u64,
}

/// Per-queue overrides of [`QueueConfig`]; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueOverrides {
    pub concurrency: Option<usize>,
    pub batch_size: Option<usize>,
    pub block_ms: Option<u64>,
    pub claim_idle_ms: Option<u64>,
    pub max_deliveries: Option<u32>,
    pub max_attempts: Option<u32>,
    pub retry_base_ms: Option<u64>,
    pub retry_cap_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub dead_retention_hours: Option<u64>,
    pub idempotency_window_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    pub catch_up: bool,
    #[serde(default)]
    pub jobs: BTreeMap<String, CronJobConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronJobConfig {
    pub schedule: String,
    pub queue: String,
    #[serde(default = "empty_object")]
    pub payload: String,
    pub catch_up: Option<bool>,
}

fn empty_object() -> String {
    "{}".to_owned()
}

impl QueueConfig {
    pub fn claim_idle(&self) -> Duration {
        Duration::from_millis(self.claim_idle_ms)
    }
}

impl DatabaseConfig {
    /// Where the database is created and migrated: `migrate_url`, else `url`.
    pub fn migrate_target(&self) -> &str {
        if self.migrate_url.is_empty() {
            &self.url
        } else {
            &self.migrate_url
        }
    }
}

impl Config {
    /// Loads the layered configuration from the real environment and `config/`.
    pub fn load() -> Result<Self, ConfigError> {
        let env_name = std::env::var("SOUK_ENV").unwrap_or_else(|_| "development".to_owned());
        let dir = std::env::var("SOUK_CONFIG_DIR").unwrap_or_else(|_| "config".to_owned());
        let file = Path::new(&dir).join(format!("{env_name}.toml"));
        let file_text = std::fs::read_to_string(&file).ok();
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::from_layers(
            file_text.as_deref().map(|t| (file.display().to_string(), t)),
            &vars,
        )
    }

    /// Builds the configuration from the defaults, an optional file `(name, text)` and
    /// environment variables. Pure, so every layer is unit-tested.
    pub fn from_layers(file: Option<(String, &str)>, vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut root = parse_toml("config/default.toml (embedded)", DEFAULT_TOML)?;
        let mut file_layer = None;
        if let Some((name, text)) = file {
            let layer = parse_toml(&name, text)?;
            merge(&mut root, layer.clone());
            file_layer = Some((name, layer));
        }
        for (name, value) in vars {
            if let Some(path) = name.strip_prefix("SOUK_") {
                if matches!(path, "ENV" | "CONFIG_DIR") || !path.contains("__") {
                    continue;
                }
                let keys: Vec<String> = path
                    .split("__")
                    .enumerate()
                    .map(|(i, k)| {
                        // Queue and cron job names keep their case; config keys are lower case.
                        if (i == 1 && path.starts_with("QUEUES__"))
                            || (i == 2 && path.starts_with("CRON__JOBS__"))
                        {
                            k.to_owned()
                        } else {
                            k.to_ascii_lowercase()
                        }
                    })
                    .collect();
                set_path(&mut root, &keys, env_value(value));
            }
        }
        for (name, key) in [("DATABASE_URL", "database"), ("REDIS_URL", "redis")] {
            if let Some((_, v)) = vars.iter().find(|(n, _)| n == name) {
                set_path(
                    &mut root,
                    &[key.to_owned(), "url".to_owned()],
                    toml::Value::String(v.clone()),
                );
            }
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            // The path of the key at fault (an unknown field's included): the key as an
            // operator wrote it, and where it came from.
            let inner = e.inner().to_string();
            let inner = inner.lines().next().unwrap_or_default().to_owned();
            let key = e.path().to_string();
            let origin = origin_of(&key, file_layer.as_ref(), vars);
            ConfigError::Key {
                key,
                origin,
                message: inner,
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The effective settings of one queue: defaults with its overrides applied.
    pub fn queue(&self, name: &str) -> QueueConfig {
        let mut q = self.queue.clone();
        if let Some(o) = self.queues.get(name) {
            macro_rules! over {
                ($($f:ident),*) => { $( if let Some(v) = o.$f { q.$f = v; } )* };
            }
            over!(
                concurrency,
                batch_size,
                block_ms,
                claim_idle_ms,
                max_deliveries,
                max_attempts,
                retry_base_ms,
                retry_cap_ms,
                timeout_ms,
                dead_retention_hours,
                idempotency_window_s
            );
        }
        q
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        let seeds = crate::queue::conn::seed_urls(&self.redis.url);
        if seeds.is_empty()
            || seeds
                .iter()
                .any(|u| !u.starts_with("redis://") && !u.starts_with("rediss://"))
        {
            return bad(
                "redis.url",
                "must start with redis:// or rediss:// (a cluster: several such URLs separated by commas)",
            );
        }
        if self.redis.wait_replicas > 0 && self.redis.wait_timeout_ms == 0 {
            return bad(
                "redis.wait_timeout_ms",
                "must be at least 1 when redis.wait_replicas is set",
            );
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}', ' ']) {
            return bad("redis.key_prefix", "must be non-empty, without braces or spaces");
        }
        if !self.database.url.starts_with("postgres://") && !self.database.url.starts_with("postgresql://") {
            return bad("database.url", "must start with postgres:// or postgresql://");
        }
        let m = &self.database.migrate_url;
        if !m.is_empty() && !m.starts_with("postgres://") && !m.starts_with("postgresql://") {
            return bad(
                "database.migrate_url",
                "must be empty or start with postgres:// or postgresql://",
            );
        }
        if !matches!(
            self.tracking.provider.as_str(),
            "aftership" | "17track" | "kuaidi100"
        ) {
            return bad(
                "tracking.provider",
                "must be \"aftership\", \"17track\" or \"kuaidi100\"",
            );
        }
        let t = &self.tracking;
        if [
            t.poll_imminent_s,
            t.poll_moving_s,
            t.poll_quiet_s,
            t.poll_unscanned_s,
        ]
        .contains(&0)
        {
            return bad("tracking.poll_moving_s", "poll intervals must be at least 1 s");
        }
        if t.rate_per_s == 0 {
            return bad("tracking.rate_per_s", "must be at least 1");
        }
        if !matches!(self.after_sales.return_default.as_str(), "approve" | "refuse") {
            return bad("after_sales.return_default", "must be \"approve\" or \"refuse\"");
        }
        let f = &self.forecast;
        if f.horizon_days == 0 || f.horizon_days > 366 {
            return bad("forecast.horizon_days", "must be between 1 and 366");
        }
        if f.horizon_weeks == 0 || f.horizon_weeks > 104 {
            return bad("forecast.horizon_weeks", "must be between 1 and 104");
        }
        if f.history_days < 28 {
            return bad("forecast.history_days", "must be at least 28");
        }
        if f.validation_origins == 0 || f.validation_origins > 10 {
            return bad("forecast.validation_origins", "must be between 1 and 10");
        }
        if f.lead_time_days > 365 || f.review_period_days > 365 {
            return bad(
                "forecast.lead_time_days",
                "lead time and review period must be at most 365 days",
            );
        }
        if !(f.service_level > 0.5 && f.service_level < 1.0) {
            return bad("forecast.service_level", "must be between 0.5 and 1 (exclusive)");
        }
        if !(f.warn_probability > 0.0 && f.warn_probability < 1.0) {
            return bad("forecast.warn_probability", "must be between 0 and 1 (exclusive)");
        }
        if self.database.batch_size == 0 {
            return bad("database.batch_size", "must be at least 1");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be \"text\" or \"json\"");
        }
        if !self.ops.listen.is_empty() && self.ops.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("ops.listen", "must be host:port with an IP address, or empty");
        }
        let m = &self.merchant_api;
        if !m.listen.is_empty() && m.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "merchant_api.listen",
                "must be host:port with an IP address, or empty",
            );
        }
        if m.requests_per_minute == 0 {
            return bad("merchant_api.requests_per_minute", "must be at least 1");
        }
        if m.action_wait_ms > 30_000 {
            return bad(
                "merchant_api.action_wait_ms",
                "must be at most 30000 (answer 202 sooner)",
            );
        }
        let mut names: Vec<(String, QueueConfig)> = vec![("queue".into(), self.queue.clone())];
        for name in self.queues.keys() {
            if !crate::queue::valid_queue_name(name) {
                return bad(
                    &format!("queues.\"{name}\""),
                    "queue names are letters, digits, '.', '_' and '-'",
                );
            }
            names.push((format!("queues.\"{name}\""), self.queue(name)));
        }
        for (prefix, q) in names {
            let key = |k: &str| format!("{prefix}.{k}");
            if q.concurrency == 0 || q.concurrency > 10_000 {
                return bad(&key("concurrency"), "must be between 1 and 10000");
            }
            if q.batch_size == 0 || q.batch_size > 10_000 {
                return bad(&key("batch_size"), "must be between 1 and 10000");
            }
            if q.block_ms < 10 || q.block_ms > 60_000 {
                return bad(&key("block_ms"), "must be between 10 and 60000 ms");
            }
            if q.claim_idle_ms < 300 {
                return bad(&key("claim_idle_ms"), "must be at least 300 ms");
            }
            if q.max_deliveries == 0 {
                return bad(&key("max_deliveries"), "must be at least 1");
            }
            if q.max_attempts == 0 {
                return bad(&key("max_attempts"), "must be at least 1");
            }
            if q.retry_base_ms == 0 || q.retry_cap_ms < q.retry_base_ms {
                return bad(
                    &key("retry_cap_ms"),
                    "needs retry_base_ms > 0 and retry_cap_ms >= retry_base_ms",
                );
            }
            if q.idempotency_window_s == 0 {
                return bad(&key("idempotency_window_s"), "must be at least 1 s");
            }
        }
        if self.marketplace.currency.len() != 3
            || !self.marketplace.currency.chars().all(|c| c.is_ascii_uppercase())
        {
            return bad("marketplace.currency", "must be an ISO 4217 code such as EUR");
        }
        if self.marketplace.payment_recheck_ms == 0 {
            return bad("marketplace.payment_recheck_ms", "must be at least 1 ms");
        }
        if !self.payment.base_url.starts_with("http://") && !self.payment.base_url.starts_with("https://") {
            return bad("payment.base_url", "must be an http(s) URL");
        }
        if self.webhooks.schedule_s.is_empty() {
            return bad("webhooks.schedule_s", "needs at least one attempt");
        }
        if self.webhooks.timeout_ms == 0 || self.webhooks.max_in_flight_per_merchant == 0 {
            return bad(
                "webhooks.timeout_ms",
                "timeout_ms and max_in_flight_per_merchant must be at least 1",
            );
        }
        if !self.admin.token.0.is_empty() && self.admin.token.0.len() < 16 {
            return bad(
                "admin.token",
                "must be empty (admin disabled) or at least 16 characters",
            );
        }
        for (name, job) in &self.cron.jobs {
            if let Err(e) = job.schedule.parse::<cron::Schedule>() {
                return bad(&format!("cron.jobs.{name}.schedule"), &e.to_string());
            }
            if !crate::queue::valid_queue_name(&job.queue) {
                return bad(&format!("cron.jobs.{name}.queue"), "not a valid queue name");
            }
            if serde_json::from_str::<serde_json::Value>(&job.payload).is_err() {
                return bad(&format!("cron.jobs.{name}.payload"), "must be a JSON document");
            }
        }
        Ok(())
    }
}

fn parse_toml(name: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        source_name: name.to_owned(),
        message: e.to_string(),
    })
}

fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (k, v) in layer {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(root: &mut toml::Table, keys: &[String], value: toml::Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut table = root;
    for k in parents {
        let entry = table
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else { return };
        table = t;
    }
    table.insert(last.clone(), value);
}

/// An environment value is a TOML value when it parses as one (numbers, booleans, arrays such
/// as `[0, 5, 300]`), else a string.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(mut t) = format!("v = {raw}").parse::<toml::Table>() {
        if let Some(v) = t.remove("v") {
            if !matches!(v, toml::Value::Table(_) | toml::Value::Datetime(_)) {
                return v;
            }
        }
    }
    toml::Value::String(raw.to_owned())
}

/// Where a dotted config key was set: the environment variable naming it, the config file
/// holding it, or souk's embedded defaults.
fn origin_of(key: &str, file: Option<&(String, toml::Table)>, vars: &[(String, String)]) -> String {
    let var = format!("SOUK_{}", key.replace('.', "__")).to_ascii_uppercase();
    if vars.iter().any(|(n, _)| n.to_ascii_uppercase() == var) {
        return format!("environment variable {var}");
    }
    if let Some((name, table)) = file {
        let mut at: Option<&toml::Value> = None;
        let mut cur = Some(table);
        for part in key.split('.') {
            at = cur.and_then(|t| t.get(part));
            cur = at.and_then(|v| v.as_table());
        }
        if at.is_some() {
            return name.clone();
        }
    }
    "config/default.toml (embedded)".to_owned()
}

/// Hides the password of a connection URL (or of each of a comma-separated list of seed
/// URLs), for logs and `souk` output.
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_url).collect::<Vec<_>>().join(",");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

mod forecast;
pub use forecast::ForecastConfig;

#[cfg(test)]
mod tests;
