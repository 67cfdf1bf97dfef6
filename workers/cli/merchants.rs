//! `souk merchants …`: add, list, update and configure merchants from the command line.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum MerchantAction {
    /// Add a merchant; prints its signing secret once.
    Add {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        url: String,
        /// auto (accept at once) or manual (merchant decides by the deadline).
        #[arg(long)]
        mode: Option<String>,
        /// accept or reject: what happens at the deadline without a decision.
        #[arg(long)]
        default: Option<String>,
        #[arg(long)]
        deadline_s: Option<i32>,
        #[arg(long)]
        commission_bps: Option<i32>,
    },
    /// List merchants (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a merchant; a new URL re-enables a disabled endpoint.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        default: Option<String>,
        #[arg(long)]
        deadline_s: Option<i32>,
        #[arg(long)]
        commission_bps: Option<i32>,
        /// Move the merchant's webhook bodies to this version (1 or 2; docs/webhooks.md).
        #[arg(long)]
        webhook_version: Option<i16>,
    },
    /// Set a merchant's ship-by deadline: accepted sub-orders not shipped within it are flagged late.
    ShipBy {
        id: String,
        /// Seconds from acceptance; omit with --clear to use tracking.ship_by_s.
        seconds: Option<i32>,
        #[arg(long, conflicts_with = "seconds")]
        clear: bool,
    },
    /// A merchant's KPIs over the last days (recomputed first).
    Kpis {
        id: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long)]
        json: bool,
    },
    /// Set the merchant's payout account at the payment provider (Stripe: acct_...).
    PayoutAccount {
        id: String,
        account: Option<String>,
        #[arg(long, conflicts_with = "account")]
        clear: bool,
    },
    /// Issue a new signing secret; the previous one keeps signing until --drop-old.
    RotateSecret {
        id: String,
        #[arg(long)]
        drop_old: bool,
    },
    /// Send a signed example of every event type (or of --event) to the merchant's endpoint
    /// and report what it answered; exits non-zero unless every one was verified (2xx).
    TestWebhook {
        id: String,
        /// One event type, e.g. sub_order.created (default: --all).
        #[arg(long, conflicts_with = "all")]
        event: Option<String>,
        /// Every event type (the default).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Who read the merchant's customers' shipping addresses through the merchant API.
    AddressReads {
        id: String,
        /// Since this many hours ago.
        #[arg(long, default_value_t = 24 * 30)]
        since_h: u32,
        #[arg(long, default_value_t = 500)]
        limit: i64,
    },
    /// A merchant's API keys (the merchant API, docs/merchants.md).
    Keys {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeyAction {
    /// Create a key; prints it once.
    Create {
        merchant: String,
        /// read (see only) or act (also accept, ship, answer, set stock …).
        #[arg(long, default_value = "act")]
        scope: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// List a merchant's keys (never the keys themselves).
    List { merchant: String },
    /// Replace a key; the old one keeps working for --overlap-s seconds.
    Rotate {
        merchant: String,
        key_id: String,
        #[arg(long, default_value_t = 86_400)]
        overlap_s: u32,
    },
    /// End a key at once.
    Revoke { merchant: String, key_id: String },
}

pub(crate) async fn merchants_command(config: Config, action: MerchantAction) -> anyhow::Result<()> {
    use souk::store::merchants::MerchantInput;
    let app = App::connect(config).await?;
    match action {
        MerchantAction::Keys { action } => {
            use souk::merchant_api::keys;
            match action {
                KeyAction::Create {
                    merchant,
                    scope,
                    label,
                } => {
                    let k = keys::create(
                        &app.pool,
                        &merchant,
                        keys::Scope::parse(&scope)?,
                        label.as_deref(),
                    )
                    .await?;
                    println!("{} ({} key of {}): {}", k.id, k.scope, k.merchant_id, k.key);
                    println!("Shown once: give it to the merchant now.");
                }
                KeyAction::List { merchant } => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&keys::list(&app.pool, &merchant).await?)?
                    );
                }
                KeyAction::Rotate {
                    merchant,
                    key_id,
                    overlap_s,
                } => {
                    let k = keys::rotate(&app.pool, &merchant, &key_id, overlap_s).await?;
                    println!(
                        "{} replaces {key_id} (which works {overlap_s} s more): {}",
                        k.id, k.key
                    );
                }
                KeyAction::Revoke { merchant, key_id } => {
                    keys::revoke(&app.pool, &merchant, &key_id).await?;
                    println!("{key_id} revoked");
                }
            }
        }
        MerchantAction::TestWebhook {
            id,
            event,
            all: _,
            json,
        } => {
            let sent = souk::merchant_api::test_webhook::run(&app, &id, event.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sent)?);
            } else {
                for s in &sent {
                    let answer = match (s.status, &s.error) {
                        (Some(code), _) => code.to_string(),
                        (None, Some(e)) => e.clone(),
                        (None, None) => "no answer".into(),
                    };
                    println!(
                        "{:<24} {:<9} {:>6} ms  {}",
                        s.event_type,
                        if s.verified { "verified" } else { "FAILED" },
                        s.latency_ms,
                        answer
                    );
                }
            }
            let failed = sent.iter().filter(|s| !s.verified).count();
            anyhow::ensure!(
                failed == 0,
                "{failed} of {} test webhooks not verified",
                sent.len()
            );
        }
        MerchantAction::AddressReads { id, since_h, limit } => {
            let since = chrono::Utc::now() - chrono::Duration::hours(i64::from(since_h));
            let rows = souk::store::merchant_api::reads::address_reads(&app.pool, &id, since, limit).await?;
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        MerchantAction::Add {
            id,
            name,
            url,
            mode,
            default,
            deadline_s,
            commission_bps,
        } => {
            let input = MerchantInput {
                name,
                webhook_url: Some(url),
                acceptance_mode: mode,
                acceptance_default: default,
                acceptance_deadline_s: deadline_s,
                commission_bps,
                webhook_version: None,
            };
            let secret = souk::admin::add_merchant(&app, &id, &input).await?;
            println!("merchant {id} added; its webhook signing secret (shown once): {secret}");
        }
        MerchantAction::List { json } => {
            let list = souk::store::merchants::list(&app.pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for m in list {
                    let state = match (&m.endpoint_disabled_at, &m.failing_since) {
                        (Some(_), _) => format!(
                            "DISABLED ({})",
                            m.endpoint_disabled_reason.clone().unwrap_or_default()
                        ),
                        (None, Some(t)) => format!("failing since {t}"),
                        _ => "ok".to_owned(),
                    };
                    println!("{:<20} {:<24} {:<7} default={:<6} deadline={}s commission={}bps secrets={} endpoint {} ({state})",
                        m.id, m.name, m.acceptance_mode, m.acceptance_default, m.acceptance_deadline_s, m.commission_bps, m.secrets, souk::domain::address::redact_webhook_url(&m.webhook_url));
                }
            }
        }
        MerchantAction::Update {
            id,
            name,
            url,
            mode,
            default,
            deadline_s,
            commission_bps,
            webhook_version,
        } => {
            let input = MerchantInput {
                name,
                webhook_url: url,
                acceptance_mode: mode,
                acceptance_default: default,
                acceptance_deadline_s: deadline_s,
                commission_bps,
                webhook_version,
            };
            souk::admin::update_merchant(&app, &id, &input).await?;
            println!("merchant {id} updated");
        }
        MerchantAction::ShipBy { id, seconds, clear } => {
            anyhow::ensure!(
                clear || seconds.is_some_and(|s| s > 0),
                "give the deadline in seconds (> 0), or --clear"
            );
            if !souk::store::shipments::set_ship_by(&app.pool, &id, seconds).await? {
                anyhow::bail!("no merchant {id}");
            }
            match seconds {
                Some(s) => println!("merchant {id}: sub-orders ship within {s} s of acceptance"),
                None => println!("merchant {id}: ship-by deadline back to tracking.ship_by_s"),
            }
        }
        MerchantAction::Kpis { id, days, json } => {
            let to = chrono::Utc::now().date_naive();
            let from = to - chrono::Duration::days(days.clamp(1, 3650) as i64 - 1);
            souk::store::kpis::compute(&app.pool, from, to).await?;
            let k = souk::store::kpis::summary(&app.pool, &id, from, to).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&k)?);
            } else {
                let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1} %", v * 100.0));
                let hours = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1} h", v / 3600.0));
                println!("{id}, {from} to {to}: {} sub-orders", k.sub_orders);
                println!("  acceptance rate      {}", pct(k.acceptance_rate));
                println!("  auto-rejected rate   {}", pct(k.auto_rejected_rate));
                println!("  late shipment rate   {}", pct(k.late_shipment_rate));
                println!("  time to ship         {}", hours(k.avg_time_to_ship_s));
                println!("  delivery time        {}", hours(k.avg_delivery_time_s));
                println!("  refund rate          {}", pct(k.refund_rate));
                println!("  return rate          {}", pct(k.return_rate));
                println!("  complaint rate       {}", pct(k.complaint_rate));
            }
        }
        MerchantAction::PayoutAccount { id, account, clear } => {
            anyhow::ensure!(
                clear || account.is_some(),
                "give the account (acct_...), or --clear"
            );
            if !souk::store::settlement::set_payout_account(&app.pool, &id, account.as_deref()).await? {
                anyhow::bail!("no merchant {id}");
            }
            match account {
                Some(a) => println!("merchant {id}: completed sub-orders are paid out to {a}"),
                None => println!("merchant {id}: payables accrue in the ledger, nothing is paid out"),
            }
        }
        MerchantAction::RotateSecret { id, drop_old } => {
            let secret = souk::admin::rotate_secret(&app, &id, drop_old).await?;
            let note = if drop_old {
                "the old secret no longer signs"
            } else {
                "the previous secret keeps signing until you rotate with --drop-old"
            };
            println!("new signing secret for {id} (shown once): {secret}\n{note}");
        }
    }
    Ok(())
}
