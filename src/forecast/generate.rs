//! `souk forecast generate`: loads a generated marketplace history
//! ([`crate::domain::forecast::generator`]) into Postgres as imported daily demand, with stock
//! levels, for the demo, trying the forecasts, and tests. Merchants missing are created.

use anyhow::Context;
use chrono::{Duration, NaiveDate};

use crate::{
    admin,
    app::App,
    domain::forecast::generator::{generate_sku, sku_code, PanelSpec},
    store::{history, merchants::MerchantInput},
};

/// What was loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Loaded {
    pub merchants: usize,
    pub merchants_created: usize,
    pub skus: usize,
    pub demand_rows: usize,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
}

/// Generates `spec` and loads it: SKU `i` goes to `merchant_ids[merchant_of(i)]` (there must be
/// `spec.merchants` ids); the last day is `as_of`. New merchants get `webhook_url` with `{id}`
/// replaced.
pub async fn load(
    app: &App,
    spec: &PanelSpec,
    merchant_ids: &[String],
    as_of: NaiveDate,
    webhook_url: &str,
    named: &[String],
) -> anyhow::Result<Loaded> {
    anyhow::ensure!(
        merchant_ids.len() == spec.merchants,
        "one merchant id per generated merchant"
    );
    let mut created = 0;
    for id in merchant_ids {
        if crate::store::merchants::get(&app.pool, id).await?.is_none() {
            let input = MerchantInput {
                name: Some(format!("Generated merchant {id}")),
                webhook_url: Some(webhook_url.replace("{id}", id)),
                ..Default::default()
            };
            admin::add_merchant(app, id, &input)
                .await
                .map_err(|e| anyhow::anyhow!("creating merchant {id}: {e}"))?;
            created += 1;
        }
    }
    let first = as_of - Duration::days(spec.days as i64 - 1);
    let spec = *spec;
    let skus = tokio::task::spawn_blocking(move || {
        (0..spec.skus).map(|i| generate_sku(&spec, i)).collect::<Vec<_>>()
    })
    .await
    .context("generating the panel")?;
    let mut rows = Vec::new();
    let mut stock: Vec<Vec<(String, i32)>> = vec![Vec::new(); spec.merchants];
    let mut loaded = 0;
    let mut per_merchant = vec![0usize; spec.merchants];
    for s in &skus {
        let m = &merchant_ids[s.merchant];
        let rank = per_merchant[s.merchant];
        per_merchant[s.merchant] += 1;
        let code = named.get(rank).cloned().unwrap_or_else(|| sku_code(s.index));
        for (t, &u) in s.units.iter().enumerate() {
            if u > 0 {
                let day = first + Duration::days(t as i64);
                rows.push((
                    m.clone(),
                    code.clone(),
                    day,
                    u as i32,
                    u as i64 * s.unit_price_minor,
                ));
            }
        }
        stock[s.merchant].push((code, s.stock.min(i32::MAX as u32) as i32));
        if rows.len() >= 50_000 {
            history::import_demand(&app.pool, &rows)
                .await
                .context("loading daily demand")?;
            loaded += rows.len();
            rows.clear();
        }
    }
    history::import_demand(&app.pool, &rows)
        .await
        .context("loading daily demand")?;
    loaded += rows.len();
    for (m, rows) in merchant_ids.iter().zip(&stock) {
        history::import_stock(&app.pool, m, rows)
            .await
            .context("loading stock")?;
    }
    Ok(Loaded {
        merchants: spec.merchants,
        merchants_created: created,
        skus: spec.skus,
        demand_rows: loaded,
        first_day: first,
        last_day: as_of,
    })
}
