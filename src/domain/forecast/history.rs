//! A merchant's sales history file, line by line (`crate::forecast::import` reads and writes
//! it): CSV with a header, or JSON lines, one SKU-day per row — `sku`, `date` (YYYY-MM-DD),
//! `units` — or one SKU-week per row, with `week` instead of `date` (the Monday that starts
//! it, YYYY-MM-DD, or the ISO week, YYYY-Www; a file is all days or all weeks), and optionally `revenue_minor` (integer minor units: never a decimal to round),
//! `on_hand` and `in_stock`. Each refusal names its line.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
};

use chrono::NaiveDate;
use serde_json::Value;

use crate::domain::input::id_ok;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// From a `--format` value or a file name's extension (`.csv`, `.jsonl`, `.ndjson`).
    pub fn parse(s: &str) -> Option<Format> {
        let s = s.rsplit('.').next().unwrap_or(s).to_ascii_lowercase();
        match s.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

/// One SKU-day of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub sku: String,
    pub day: NaiveDate,
    pub units: i32,
    pub revenue_minor: Option<i64>,
    pub in_stock: Option<bool>,
    pub on_hand: Option<i32>,
}

/// A refused line: its number (1 is the file's first line) and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

const COLUMNS: &[&str] = &[
    "sku",
    "date",
    "units",
    "revenue_minor",
    "on_hand",
    "in_stock",
    "week",
];

/// Reads lines one by one, checking each and the file as a whole (one row per SKU and day).
pub struct Parser {
    format: Format,
    /// CSV: the column of each known field.
    columns: Option<Vec<usize>>,
    width: usize,
    today: NaiveDate,
    /// Whether the rows are weeks (known from the CSV header or the first JSON line).
    weekly: Option<bool>,
    /// A 64-bit hash of (SKU, day) → the line that had it: 10 million rows in ~250 MB.
    seen: HashMap<u64, u32>,
}

impl Parser {
    pub fn new(format: Format, today: NaiveDate) -> Parser {
        Parser {
            format,
            columns: None,
            width: 0,
            today,
            weekly: None,
            seen: HashMap::new(),
        }
    }

    /// Whether the file's rows are weeks (`week` column) rather than days; `None` before the
    /// first row.
    pub fn weekly(&self) -> Option<bool> {
        self.weekly
    }

    /// The row on line `n`, or none for a blank line or the CSV header. A weekly row's `day` is
    /// the Monday that starts its week.
    pub fn line(&mut self, n: usize, text: &str) -> Result<Option<HistoryRow>, LineError> {
        let err = |message: String| LineError { line: n, message };
        let text = text.strip_suffix('\r').unwrap_or(text);
        let text = if n == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        let fields: [Option<String>; 7] = match self.format {
            Format::Csv => {
                let cells = split_csv(text).map_err(err)?;
                let Some(cols) = &self.columns else {
                    self.header(&cells).map_err(err)?;
                    return Ok(None);
                };
                if cells.len() != self.width {
                    return Err(err(format!(
                        "{} fields where the header has {}",
                        cells.len(),
                        self.width
                    )));
                }
                std::array::from_fn(|i| {
                    cols.get(i)
                        .copied()
                        .filter(|&c| c != usize::MAX)
                        .map(|c| cells[c].clone())
                        .filter(|v| !v.is_empty())
                })
            }
            Format::JsonLines => {
                let v: Value = serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
                let Value::Object(o) = v else {
                    return Err(err("a line is one JSON object".into()));
                };
                if let Some(k) = o.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
                    return Err(err(unknown_field(k)));
                }
                let weekly = o.contains_key("week");
                match self.weekly {
                    Some(w) if w != weekly => {
                        return Err(err(format!(
                            "a {} where the file's first row was a {}: a file is all days or all weeks",
                            if weekly { "week" } else { "day" },
                            if w { "week" } else { "day" }
                        )))
                    }
                    _ => self.weekly = Some(weekly),
                }
                std::array::from_fn(|i| match o.get(COLUMNS[i]) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                })
            }
        };
        let row = self.row(fields).map_err(err)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&row.sku, row.day).hash(&mut h);
        if let Some(first) = self.seen.insert(h.finish(), n as u32) {
            let what = if self.weekly == Some(true) { "week" } else { "day" };
            return Err(err(format!(
                "{} on {} again (first on line {first}); one row per SKU and {what}",
                row.sku, row.day
            )));
        }
        Ok(Some(row))
    }

    fn header(&mut self, cells: &[String]) -> Result<(), String> {
        let mut cols = vec![usize::MAX; COLUMNS.len()];
        for (i, c) in cells.iter().enumerate() {
            let name = c.trim().to_ascii_lowercase();
            let Some(k) = COLUMNS.iter().position(|k| *k == name) else {
                return Err(unknown_field(&name));
            };
            if cols[k] != usize::MAX {
                return Err(format!("column {name} twice"));
            }
            cols[k] = i;
        }
        let has = |name: &str| cols[COLUMNS.iter().position(|k| *k == name).unwrap()] != usize::MAX;
        if has("date") && has("week") {
            return Err("both date and week columns: a file is all days (date) or all weeks (week)".into());
        }
        self.weekly = Some(has("week"));
        let when = if has("week") { "week" } else { "date" };
        for required in ["sku", when, "units"] {
            if cols[COLUMNS.iter().position(|k| *k == required).unwrap()] == usize::MAX {
                return Err(format!(
                    "the header has no {required} column (the first line names the columns: {})",
                    COLUMNS.join(", ")
                ));
            }
        }
        self.width = cells.len();
        self.columns = Some(cols);
        Ok(())
    }

    fn row(&self, f: [Option<String>; 7]) -> Result<HistoryRow, String> {
        let [sku, date, units, revenue, on_hand, in_stock, week] = f;
        let sku = sku.ok_or("sku is missing")?;
        if !id_ok(&sku) {
            return Err(format!(
                "sku {sku:?} is not 1–200 printable characters without bidirectional controls"
            ));
        }
        if date.is_some() && week.is_some() {
            return Err("both date and week: a row is one day or one week".into());
        }
        let day = if self.weekly == Some(true) {
            week_start(&week.ok_or("week is missing")?)?
        } else {
            let date = date.ok_or("date is missing")?;
            NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                .ok()
                .filter(|_| date.len() == 10)
                .ok_or_else(|| format!("date {date:?} is not YYYY-MM-DD"))?
        };
        let earliest = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
        if day < earliest || day > self.today {
            return Err(format!(
                "date {day} is outside 2000-01-01 to today ({})",
                self.today
            ));
        }
        let units = whole(&units.ok_or("units is missing")?, "units", i64::from(i32::MAX))? as i32;
        let revenue_minor = revenue
            .map(|r| whole(&r, "revenue_minor", i64::MAX))
            .transpose()?;
        let on_hand = on_hand
            .map(|v| whole(&v, "on_hand", i64::from(i32::MAX)).map(|v| v as i32))
            .transpose()?;
        let in_stock = in_stock
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(format!("in_stock {v:?} is not true or false")),
            })
            .transpose()?;
        if let (Some(h), Some(false)) = (on_hand, in_stock) {
            if h > 0 {
                return Err(format!("on_hand {h} but in_stock false"));
            }
        }
        Ok(HistoryRow {
            sku,
            day,
            units,
            revenue_minor,
            in_stock: in_stock.or(on_hand.map(|h| h > 0)),
            on_hand,
        })
    }
}

fn unknown_field(name: &str) -> String {
    let hint = match name {
        "revenue" | "amount" | "sales" => {
            " (give revenue_minor: the revenue in the currency's minor unit, a whole number)"
        }
        _ => "",
    };
    format!(
        "unknown field {name:?}{hint}; the fields are {}",
        COLUMNS.join(", ")
    )
}

/// The Monday that starts a week given as that Monday (YYYY-MM-DD) or as an ISO week
/// (YYYY-Www).
fn week_start(s: &str) -> Result<NaiveDate, String> {
    use chrono::Datelike;
    let t = s.trim();
    if let Some((y, w)) = t.split_once("-W") {
        let iso = y
            .parse::<i32>()
            .ok()
            .zip(w.parse::<u32>().ok().filter(|_| w.len() == 2))
            .and_then(|(y, w)| NaiveDate::from_isoywd_opt(y, w, chrono::Weekday::Mon));
        return iso.ok_or_else(|| format!("week {s:?} is not an ISO week such as 2026-W05"));
    }
    let day = NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .filter(|_| t.len() == 10)
        .ok_or_else(|| format!("week {s:?} is not its Monday (YYYY-MM-DD) or an ISO week (YYYY-Www)"))?;
    if day.weekday() != chrono::Weekday::Mon {
        return Err(format!(
            "week {day} is a {:?}: a week is named by the Monday that starts it",
            day.weekday()
        ));
    }
    Ok(day)
}

/// A whole number 0..=max, written as digits (no sign, fraction or exponent).
fn whole(s: &str, field: &str, max: i64) -> Result<i64, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{field} {s:?} is not a whole number ≥ 0"));
    }
    t.parse::<i64>()
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| format!("{field} {t} is above {max}"))
}

/// The fields of one CSV line (RFC 4180: quoted fields may hold commas and doubled quotes;
/// a quoted field may not span lines).
pub(super) fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut started = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("text after a closing quote".into());
                    }
                }
                c => cur.push(c),
            }
        } else {
            match c {
                ',' => {
                    out.push(std::mem::take(&mut cur));
                    started = true;
                    continue;
                }
                '"' if started && cur.is_empty() => quoted = true,
                c => cur.push(c),
            }
        }
        started = false;
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn parse_all(format: Format, text: &str) -> Vec<Result<Option<HistoryRow>, LineError>> {
        let mut p = Parser::new(format, day("2026-12-01"));
        text.lines().enumerate().map(|(i, l)| p.line(i + 1, l)).collect()
    }

    #[test]
    fn csv_rows_with_quotes_optional_columns_and_a_bom() {
        let r = parse_all(
            Format::Csv,
            "\u{feff}sku,date,units,revenue_minor,in_stock\n\"SKU, \"\"big\"\"\",2026-11-30,3,4500,true\nB,2026-11-30,0,,\r\n",
        );
        assert_eq!(r[0], Ok(None));
        let a = r[1].clone().unwrap().unwrap();
        assert_eq!(
            (a.sku.as_str(), a.units, a.revenue_minor, a.in_stock),
            ("SKU, \"big\"", 3, Some(4500), Some(true))
        );
        let b = r[2].clone().unwrap().unwrap();
        assert_eq!((b.units, b.revenue_minor, b.in_stock), (0, None, None));
    }

    #[test]
    fn every_bad_line_is_refused_with_its_number_and_reason() {
        let text = "sku,date,units\nA,2026-11-30,2\nA,2026-11-30,5\nB,30/11/2026,1\nC,2026-11-29,-1\nD,2026-11-29,1.5\nE,2099-01-01,1\nF,2026-11-29\n,2026-11-29,1";
        let r = parse_all(Format::Csv, text);
        let errs: Vec<(usize, String)> = r
            .into_iter()
            .filter_map(|x| x.err())
            .map(|e| (e.line, e.message))
            .collect();
        let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9], "{errs:?}");
        assert!(errs[0].1.contains("first on line 2"), "{errs:?}");
        assert!(errs[1].1.contains("YYYY-MM-DD"));
        assert!(errs[2].1.contains("whole number"));
        assert!(errs[4].1.contains("outside"));
        assert!(errs[5].1.contains("fields where the header has"));
        assert!(errs[6].1.contains("sku is missing"));
    }

    #[test]
    fn a_header_must_name_known_columns_and_money_comes_in_minor_units() {
        let r = parse_all(Format::Csv, "sku,date,units,revenue\n");
        assert!(r[0].as_ref().unwrap_err().message.contains("revenue_minor"));
        let r = parse_all(Format::Csv, "sku,units\n");
        assert!(r[0].as_ref().unwrap_err().message.contains("no date column"));
    }

    #[test]
    fn weeks_are_named_by_their_monday_or_iso_week_and_a_file_does_not_mix() {
        let r = parse_all(
            Format::Csv,
            "sku,week,units
A,2026-11-23,70
A,2026-W49,60
A,2026-11-25,1
A,2026-W48,5
B,2026-W60,1
",
        );
        assert_eq!(r[1].clone().unwrap().unwrap().day, day("2026-11-23"));
        assert_eq!(r[2].clone().unwrap().unwrap().day, day("2026-11-30"));
        let errs: Vec<String> = r
            .iter()
            .filter_map(|x| x.clone().err())
            .map(|e| format!("{}: {}", e.line, e.message))
            .collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with("4: ") && errs[0].contains("Wed"), "{errs:?}");
        assert!(
            errs[1].starts_with("5: ") && errs[1].contains("one row per SKU and week"),
            "{errs:?}"
        );
        assert!(
            errs[2].starts_with("6: ") && errs[2].contains("ISO week"),
            "{errs:?}"
        );
        let r = parse_all(
            Format::Csv,
            "sku,date,week,units
",
        );
        assert!(r[0].as_ref().unwrap_err().message.contains("both date and week"));
        let r = parse_all(
            Format::JsonLines,
            "{\"sku\": \"A\", \"week\": \"2026-W48\", \"units\": 3}\n{\"sku\": \"A\", \"date\": \"2026-11-30\", \"units\": 1}",
        );
        assert_eq!(r[0].clone().unwrap().unwrap().day, day("2026-11-23"));
        assert!(r[1]
            .as_ref()
            .unwrap_err()
            .message
            .contains("all days or all weeks"));
    }

    #[test]
    fn json_lines_with_numbers_or_strings_and_no_unknown_keys() {
        let r = parse_all(
            Format::JsonLines,
            "{\"sku\": \"A\", \"date\": \"2026-11-30\", \"units\": 4, \"on_hand\": 0}\n{\"sku\": \"B\", \"date\": \"2026-11-30\", \"units\": \"2\", \"week\": 48}\n[1]\n{\"sku\": \"C\", \"date\": \"2026-11-30\", \"units\": 2.0}",
        );
        let a = r[0].clone().unwrap().unwrap();
        assert_eq!((a.units, a.on_hand, a.in_stock), (4, Some(0), Some(false)));
        assert!(
            r[1].as_ref()
                .unwrap_err()
                .message
                .contains("all days or all weeks"),
            "{r:?}"
        );
        assert!(r[2].as_ref().unwrap_err().message.contains("one JSON object"));
        assert!(
            r[3].as_ref().unwrap_err().message.contains("whole number"),
            "no rounding: {r:?}"
        );
    }
}
