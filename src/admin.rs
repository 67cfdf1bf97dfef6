//! Merchant administration and order inspection, shared by the command line (`souk merchants`,
//! `souk orders show`) and the admin HTTP endpoints. Validates input (webhook URLs through the
//! SSRF guard) and generates signing secrets from the operating system's random source.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::{
    app::App,
    domain::webhook::new_secret,
    integrations::webhook::check_url,
    store::merchants::{self, MerchantInput},
};

/// A refused admin request.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// A fresh `whsec_` secret from 32 bytes of OS randomness.
pub fn generate_secret() -> Result<String, AdminError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| AdminError::Invalid(format!("no randomness: {e}")))?;
    Ok(new_secret(&bytes))
}

fn validate(app: &App, input: &MerchantInput, creating: bool) -> Result<(), AdminError> {
    if creating && input.webhook_url.is_none() {
        return Err(AdminError::Invalid("webhook_url is required".into()));
    }
    if let Some(url) = &input.webhook_url {
        check_url(url, app.config.webhooks.allow_private_targets)
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
    }
    if let Some(m) = &input.acceptance_mode {
        if !matches!(m.as_str(), "auto" | "manual") {
            return Err(AdminError::Invalid(
                "acceptance_mode must be auto or manual".into(),
            ));
        }
    }
    if let Some(m) = &input.acceptance_default {
        if !matches!(m.as_str(), "accept" | "reject") {
            return Err(AdminError::Invalid(
                "acceptance_default must be accept or reject".into(),
            ));
        }
    }
    if matches!(input.acceptance_deadline_s, Some(d) if d <= 0) {
        return Err(AdminError::Invalid(
            "acceptance_deadline_s must be positive".into(),
        ));
    }
    if matches!(input.webhook_version, Some(v) if !(1..=2).contains(&v)) {
        return Err(AdminError::Invalid("webhook_version must be 1 or 2".into()));
    }
    if matches!(input.commission_bps, Some(b) if !(0..=10_000).contains(&b)) {
        return Err(AdminError::Invalid(
            "commission_bps must be between 0 and 10000".into(),
        ));
    }
    Ok(())
}

/// Creates a merchant; returns its first signing secret (shown once; give it to the merchant).
pub async fn add_merchant(app: &App, id: &str, input: &MerchantInput) -> Result<String, AdminError> {
    if !crate::queue::valid_queue_name(id) {
        return Err(AdminError::Invalid(
            "merchant ids are 1–100 letters, digits, '.', '_' or '-'".into(),
        ));
    }
    validate(app, input, true)?;
    let secret = generate_secret()?;
    if !merchants::create(&app.pool, id, input, &secret).await? {
        return Err(AdminError::Conflict(format!("merchant {id}")));
    }
    Ok(secret)
}

pub async fn update_merchant(app: &App, id: &str, input: &MerchantInput) -> Result<(), AdminError> {
    validate(app, input, false)?;
    if !merchants::update(&app.pool, id, input).await? {
        return Err(AdminError::NotFound(format!("merchant {id}")));
    }
    Ok(())
}

/// Adds a new secret (the previous one keeps signing until `drop_old`); returns the new one.
pub async fn rotate_secret(app: &App, id: &str, drop_old: bool) -> Result<String, AdminError> {
    let secret = generate_secret()?;
    if !merchants::rotate_secret(&app.pool, id, &secret, drop_old).await? {
        return Err(AdminError::NotFound(format!("merchant {id}")));
    }
    Ok(secret)
}

/// The whole story of one order (by storefront id or souk id) as JSON.
pub async fn order_story(pool: &PgPool, key: &str) -> Result<Value, AdminError> {
    let id: Option<i64> = match key.parse::<i64>() {
        Ok(n) => {
            sqlx::query_scalar("SELECT id FROM orders WHERE id = $1 OR storefront_order_id = $2")
                .bind(n)
                .bind(key)
                .fetch_optional(pool)
                .await?
        }
        Err(_) => {
            sqlx::query_scalar("SELECT id FROM orders WHERE storefront_order_id = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
        }
    };
    let Some(id) = id else {
        let rejected: Vec<Value> = sqlx::query_scalar(
            "SELECT json_build_object('code', code, 'reason', reason, 'at', created_at, 'entry_id', entry_id)
             FROM rejected_messages WHERE storefront_order_id = $1 ORDER BY id",
        )
        .bind(key)
        .fetch_all(pool)
        .await?;
        if rejected.is_empty() {
            return Err(AdminError::NotFound(format!("order {key}")));
        }
        return Ok(json!({"storefront_order_id": key, "status": "rejected", "rejections": rejected}));
    };
    let order: Value = sqlx::query_scalar(
        "SELECT json_build_object('id', id, 'storefront_order_id', storefront_order_id, 'status', status,
            'status_reason', status_reason, 'currency', currency, 'total_minor', total_minor, 'customer', customer,
            'payment', json_build_object('provider', payment_provider, 'payment_id', payment_id, 'status', payment_status,
                'captured_minor', captured_minor, 'refunded_minor', refunded_minor),
            'shipping_address', shipping_address, 'placed_at', placed_at, 'enqueued_at', enqueued_at)
         FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    let subs: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('id', s.id, 'merchant_id', s.merchant_id, 'status', s.status, 'status_reason', s.status_reason,
            'subtotal_minor', s.subtotal_minor, 'commission_minor', s.commission_minor, 'accept_by', s.accept_by,
            'lines', (SELECT coalesce(json_agg(json_build_object('sku', sku, 'quantity', quantity, 'unit_price_minor', unit_price_minor) ORDER BY sku), '[]') FROM order_lines WHERE sub_order_id = s.id),
            'reservations', (SELECT coalesce(json_agg(json_build_object('sku', sku, 'quantity', quantity, 'status', status, 'expires_at', expires_at) ORDER BY sku), '[]') FROM reservations WHERE sub_order_id = s.id),
            'webhooks', (SELECT coalesce(json_agg(json_build_object('webhook_id', d.id, 'type', d.event_type, 'status', d.status, 'attempts',
                    (SELECT coalesce(json_agg(json_build_object('at', a.attempted_at, 'status_code', a.status_code, 'latency_ms', a.latency_ms, 'error', a.error, 'response', a.response_excerpt) ORDER BY a.id), '[]') FROM webhook_attempts a WHERE a.delivery_id = d.id)
                ) ORDER BY d.created_at), '[]') FROM webhook_deliveries d WHERE d.order_id = s.order_id AND d.sub_order_id = s.id))
         FROM sub_orders s WHERE s.order_id = $1 ORDER BY s.id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let payments: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('kind', kind, 'amount_minor', amount_minor, 'idempotency_key', idempotency_key, 'outcome', outcome, 'at', created_at)
         FROM payment_operations WHERE order_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let events: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('id', id, 'at', created_at, 'type', type, 'sub_order_id', sub_order_id, 'actor', actor, 'reason', reason, 'data', data)
         FROM order_events WHERE order_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let shipments = crate::store::shipments::story(pool, id).await?;
    let (returns, complaints) = crate::store::after_sales::story(pool, id).await?;
    Ok(
        json!({"order": order, "sub_orders": subs, "payment_operations": payments, "shipments": shipments,
              "returns": returns, "complaints": complaints, "timeline": events}),
    )
}
