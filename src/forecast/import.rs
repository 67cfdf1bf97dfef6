//! A merchant's own sales history, imported (`souk forecast import`,
//! `POST /admin/merchants/{id}/demand-history`, `POST /merchant/v1/forecasts/history`; docs/forecasting.md, "Importing a history").
//!
//! The whole file is checked first ([`Parser`]) and nothing is written unless every line is
//! good. Then rows go in as source `imported`, 10,000 per transaction, so that no transaction
//! is long enough to hold back the relays that wait for old ones to end. A day the merchant
//! imported counts its imported units only ([`crate::store::forecasts::DAY_UNITS`]): an import
//! that overlaps souk's own orders never counts a day twice.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
};

use sqlx::PgPool;

pub use crate::domain::forecast::history::{Format, HistoryRow, LineError, Parser};
use crate::{domain::forecast::Period, store::history};

/// Rows per transaction.
pub const CHUNK: usize = 10_000;
/// Refusals reported at most (the count says how many there were).
pub const MAX_ERRORS: usize = 100;

/// Where the history is read from: twice, once to check and once to write.
pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    fn open(&self) -> std::io::Result<Box<dyn BufRead + Send + '_>> {
        Ok(match self {
            Source::File(p) => Box::new(BufReader::with_capacity(1 << 20, std::fs::File::open(p)?)),
            Source::Bytes(b) => Box::new(&b[..]),
        })
    }
}

/// The format of a history sent over HTTP: `?format=csv|jsonl`, else the content type
/// (`text/csv`, or an `ndjson` / `jsonl` type).
pub fn format_of(query: Option<&str>, content_type: &str) -> Option<Format> {
    match query {
        Some(f) => Format::parse(f),
        None if content_type.starts_with("text/csv") => Some(Format::Csv),
        None if content_type.contains("ndjson") || content_type.contains("jsonl") => Some(Format::JsonLines),
        None => None,
    }
}

/// What an import did, or why it did nothing.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub rows: u64,
    pub replaced: u64,
    /// Refused lines (at most [`MAX_ERRORS`]); when any, nothing was written.
    pub errors: Vec<LineError>,
    pub error_count: usize,
}

/// Checks `source` whole, then writes it for `merchant` (after removing its imported history
/// when `replace`). `progress` is told (rows written, rows in the file) after each chunk.
pub async fn import(
    pool: &PgPool,
    merchant: &str,
    source: &Source,
    format: Format,
    replace: bool,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Outcome> {
    let Some(period) = crate::store::forecasts::period(pool, merchant).await? else {
        anyhow::bail!("no merchant {merchant}")
    };
    let today = chrono::Utc::now().date_naive();
    let mut out = Outcome::default();
    let mut total = 0u64;
    let weekly;
    {
        let mut p = Parser::new(format, today);
        for (i, line) in source.open()?.lines().enumerate() {
            let line = line.map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
            match p.line(i + 1, &line) {
                Ok(Some(_)) => total += 1,
                Ok(None) => {}
                Err(e) => {
                    out.error_count += 1;
                    if out.errors.len() < MAX_ERRORS {
                        out.errors.push(e);
                    }
                }
            }
        }
        weekly = p.weekly();
    }
    if out.error_count > 0 {
        return Ok(out);
    }
    // A week's units on its Monday would read as one busy day to a daily merchant, and days
    // would be summed into weeks that souk's own orders also fill.
    if let Some(weekly) = weekly.filter(|w| *w != (period == Period::Week)) {
        out.error_count = 1;
        out.errors.push(LineError {
            line: 1,
            message: if weekly {
                format!("a weekly history for {merchant}, whose forecasts are daily: set `souk forecast period --merchant {merchant} week` first")
            } else {
                format!("a daily history for {merchant}, whose forecasts are weekly: send one row per week (a week column)")
            },
        });
        return Ok(out);
    }
    if replace {
        loop {
            let n = history::delete_imported(pool, merchant, CHUNK as i64).await?;
            out.replaced += n;
            if n == 0 {
                break;
            }
        }
    }
    let mut p = Parser::new(format, today);
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut lines = source.open()?.lines().enumerate();
    loop {
        let next = lines.next();
        if let Some((i, line)) = &next {
            let line = line
                .as_ref()
                .map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
            if let Some(row) = p
                .line(i + 1, line)
                .map_err(|e| anyhow::anyhow!("line {}: {}", e.line, e.message))?
            {
                chunk.push(row);
            }
        }
        if chunk.len() == CHUNK || (next.is_none() && !chunk.is_empty()) {
            history::upsert_imported(pool, merchant, &chunk).await?;
            out.rows += chunk.len() as u64;
            chunk.clear();
            progress(out.rows, total);
        }
        if next.is_none() {
            break;
        }
    }
    Ok(out)
}
