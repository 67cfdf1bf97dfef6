//! Merchant API keys: created, listed, rotated with an overlap and revoked by the operator
//! (`souk merchants keys …`, `/admin/merchants/{id}/keys`); a key is shown once and kept as its
//! SHA-256.

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::admin::AdminError;

/// What a key may do: `read` sees the merchant's data; `act` also acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Act,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, AdminError> {
        match s {
            "read" => Ok(Scope::Read),
            "act" => Ok(Scope::Act),
            _ => Err(AdminError::Invalid("scope must be read or act".into())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Act => "act",
        }
    }
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: String,
    pub merchant_id: String,
    pub scope: String,
    pub display_prefix: String,
    pub label: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub replaced_by: Option<String>,
}

/// A key just made: `key` is shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub id: String,
    pub merchant_id: String,
    pub scope: &'static str,
    pub key: String,
}

/// The key a request authenticated with.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub merchant_id: String,
    pub scope: Scope,
}

fn random(n: usize) -> Result<Vec<u8>, AdminError> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(|e| AdminError::Invalid(format!("no randomness: {e}")))?;
    Ok(bytes)
}

pub fn digest(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// `smk_` and 32 random bytes in URL-safe base64: no character a shell or header would mangle.
fn new_secret() -> Result<String, AdminError> {
    Ok(format!(
        "smk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32)?)
    ))
}

fn new_id() -> Result<String, AdminError> {
    let b = random(8)?;
    Ok(format!(
        "key_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    merchant: &str,
    scope: &str,
    label: Option<&str>,
) -> Result<NewKey, AdminError> {
    let key = new_secret()?;
    let id = new_id()?;
    sqlx::query(
        "INSERT INTO merchant_api_keys (id, merchant_id, scope, secret_sha256, display_prefix, label)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(merchant)
    .bind(scope)
    .bind(digest(&key))
    .bind(&key[..12])
    .bind(label)
    .execute(&mut **tx)
    .await?;
    Ok(NewKey {
        id,
        merchant_id: merchant.to_owned(),
        scope: if scope == "read" { "read" } else { "act" },
        key,
    })
}

/// Creates a key for `merchant`.
pub async fn create(
    pool: &PgPool,
    merchant: &str,
    scope: Scope,
    label: Option<&str>,
) -> Result<NewKey, AdminError> {
    if let Some(l) = label {
        if l.chars().count() > 200 || l.chars().any(char::is_control) {
            return Err(AdminError::Invalid(
                "a label is at most 200 printable characters".into(),
            ));
        }
    }
    let mut tx = pool.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM merchants WHERE id = $1)")
        .bind(merchant)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(AdminError::NotFound(format!("merchant {merchant}")));
    }
    let k = insert(&mut tx, merchant, scope.as_str(), label).await?;
    tx.commit().await?;
    Ok(k)
}

/// A merchant's keys, newest first (revoked and expired ones too, marked).
pub async fn list(pool: &PgPool, merchant: &str) -> Result<Vec<KeyInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, merchant_id, scope, display_prefix, label, created_at, expires_at, revoked_at, last_used_at, replaced_by
         FROM merchant_api_keys WHERE merchant_id = $1 ORDER BY created_at DESC, id",
    )
    .bind(merchant)
    .fetch_all(pool)
    .await
}

/// Replaces a live key: a new one with the same merchant, scope and label; the old one keeps
/// working for `overlap_s` seconds (0: ends now).
pub async fn rotate(
    pool: &PgPool,
    merchant: &str,
    key_id: &str,
    overlap_s: u32,
) -> Result<NewKey, AdminError> {
    let mut tx = pool.begin().await?;
    let old: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT scope, label FROM merchant_api_keys
         WHERE id = $1 AND merchant_id = $2 AND revoked_at IS NULL AND replaced_by IS NULL
           AND (expires_at IS NULL OR expires_at > now())
         FOR UPDATE",
    )
    .bind(key_id)
    .bind(merchant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((scope, label)) = old else {
        return Err(AdminError::NotFound(format!(
            "live key {key_id} of merchant {merchant}"
        )));
    };
    let k = insert(&mut tx, merchant, &scope, label.as_deref()).await?;
    sqlx::query(
        "UPDATE merchant_api_keys SET replaced_by = $2, expires_at = now() + make_interval(secs => $3)
         WHERE id = $1",
    )
    .bind(key_id)
    .bind(&k.id)
    .bind(f64::from(overlap_s))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(k)
}

/// Ends a key at once.
pub async fn revoke(pool: &PgPool, merchant: &str, key_id: &str) -> Result<(), AdminError> {
    let n = sqlx::query(
        "UPDATE merchant_api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND merchant_id = $2",
    )
    .bind(key_id)
    .bind(merchant)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(AdminError::NotFound(format!(
            "key {key_id} of merchant {merchant}"
        )));
    }
    Ok(())
}

/// The live key `key` is, if any; its last-used time is refreshed at most once a minute.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Option<Caller>, sqlx::Error> {
    if !key.starts_with("smk_") || key.len() > 100 {
        return Ok(None);
    }
    let row: Option<(String, String, String, bool)> = sqlx::query_as(
        "SELECT id, merchant_id, scope, last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
         FROM merchant_api_keys
         WHERE secret_sha256 = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(digest(key))
    .fetch_optional(pool)
    .await?;
    let Some((key_id, merchant_id, scope, stale)) = row else {
        return Ok(None);
    };
    if stale {
        sqlx::query("UPDATE merchant_api_keys SET last_used_at = now() WHERE id = $1")
            .bind(&key_id)
            .execute(pool)
            .await?;
    }
    Ok(Some(Caller {
        key_id,
        merchant_id,
        scope: if scope == "act" { Scope::Act } else { Scope::Read },
    }))
}
