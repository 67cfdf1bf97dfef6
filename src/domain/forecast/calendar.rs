//! Holidays and promotions: days that do not sell like the rest.
//!
//! A merchant's calendar names days of two kinds, for all its SKUs or for one. In the history
//! they are set aside before fitting ([`set_aside`]): each takes what a usual day would have
//! sold ([`super::censor::usual_demand`]), so a promotion does not lift the level and a closed
//! holiday does not sink it, and the ratio of what they did sell to that usual demand is the
//! kind's effect, shrunk towards none when there are few such days. In the horizon the days of
//! each kind get their effect ([`apply`]): the mean is scaled and its quantiles recomputed.
//!
//! A calendar file ([`parse_calendar`]) names periods; the math itself sees one kind (or none)
//! per day of a series. A merchant's days are its own calendar plus its country's, if it has one
//! ([`parse_country_calendar`]: an operator loads each country's public holidays). souk ships no
//! country's dates: they change by decree (China's working-day swaps are set every year).

use chrono::NaiveDate;

use super::{censor::usual_demand, history::LineError, SkuForecast};

/// What makes a day unusual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayKind {
    /// A public or shop holiday: the effect learnt is usually below one (closed, or quieter).
    Holiday,
    /// A promotion (sale, campaign): usually above one.
    Promotion,
}

impl DayKind {
    /// The kind named in a calendar file or column.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "holiday" => Some(Self::Holiday),
            "promotion" => Some(Self::Promotion),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Holiday => "holiday",
            Self::Promotion => "promotion",
        }
    }
}

/// One period of a calendar file: `kind` from `from` to `to` (both included), for one SKU or,
/// with `sku` empty, for every SKU of the merchant.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub kind: DayKind,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub sku: String,
    pub name: Option<String>,
}

/// The columns of a calendar file: `kind` and `from` required, the others optional.
const COLUMNS: [&str; 5] = ["kind", "from", "to", "sku", "name"];

/// Reads a calendar file: CSV with a header naming its columns (`kind`, `from`, and optionally
/// `to`, `sku`, `name`), one period a line. Checked whole: every bad line is named, and a file
/// with any is refused.
pub fn parse_calendar(text: &str) -> Result<Vec<Period>, Vec<LineError>> {
    parse(text, true)
}

/// A country code as stored: ISO 3166-1 alpha-2, two ASCII letters, upper-cased (`cn` is CN).
pub fn country_code(code: &str) -> Option<String> {
    let c = code.trim().to_ascii_uppercase();
    (c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())).then_some(c)
}

/// Reads a country's calendar: the same file, for every SKU of the country's merchants, so
/// the `sku` column must be empty.
pub fn parse_country_calendar(text: &str) -> Result<Vec<Period>, Vec<LineError>> {
    parse(text, false)
}

fn parse(text: &str, per_sku: bool) -> Result<Vec<Period>, Vec<LineError>> {
    let (mut periods, mut errors) = (Vec::new(), Vec::new());
    let mut columns: Option<Vec<Option<usize>>> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let raw = if line == 1 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        };
        if raw.trim().is_empty() {
            continue;
        }
        let fail = |message: String| LineError { line, message };
        let cells = match super::history::split_csv(raw) {
            Ok(c) => c,
            Err(e) => {
                errors.push(fail(e));
                continue;
            }
        };
        let Some(cols) = &columns else {
            let names: Vec<&str> = cells.iter().map(|c| c.trim()).collect();
            if let Some(bad) = names.iter().find(|n| !COLUMNS.contains(n)) {
                errors.push(fail(format!(
                    "unknown column {bad:?} (the columns are {})",
                    COLUMNS.join(", ")
                )));
                return Err(errors);
            }
            if !names.contains(&"kind") || !names.contains(&"from") {
                errors.push(fail("the header must name kind and from".into()));
                return Err(errors);
            }
            columns = Some(
                COLUMNS
                    .iter()
                    .map(|c| names.iter().position(|n| n == c))
                    .collect(),
            );
            continue;
        };
        let cell = |k: usize| {
            cols[k]
                .and_then(|c| cells.get(c))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        match period(cell(0), cell(1), cell(2), cell(3), cell(4)) {
            Ok(p) if !per_sku && !p.sku.is_empty() => errors.push(fail(format!(
                "sku {:?}: a country's calendar is for all its merchants' SKUs; leave sku empty",
                p.sku
            ))),
            Ok(p) => periods.push(p),
            Err(m) => errors.push(fail(m)),
        }
    }
    if columns.is_none() {
        errors.push(LineError {
            line: 1,
            message: "no header: the first line names the columns".into(),
        });
    }
    if errors.is_empty() {
        Ok(periods)
    } else {
        Err(errors)
    }
}

fn period(
    kind: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    sku: Option<&str>,
    name: Option<&str>,
) -> Result<Period, String> {
    let kind = kind.ok_or("kind is missing")?;
    let kind = DayKind::parse(kind).ok_or_else(|| format!("kind {kind:?} is not holiday or promotion"))?;
    let date = |field: &str, v: &str| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .filter(|d| (2000..=2100).contains(&chrono::Datelike::year(d)))
            .ok_or_else(|| format!("{field} {v:?} is not a date YYYY-MM-DD between 2000 and 2100"))
    };
    let from = date("from", from.ok_or("from is missing")?)?;
    let to = match to {
        Some(v) => date("to", v)?,
        None => from,
    };
    if to < from {
        return Err(format!("to {to} is before from {from}"));
    }
    if (to - from).num_days() >= 366 {
        return Err(format!("{from} to {to} is longer than a year"));
    }
    if sku.is_some_and(|s| s.chars().any(char::is_control)) || name.is_some_and(|s| s.contains('\0')) {
        return Err("control characters in sku or name".into());
    }
    Ok(Period {
        kind,
        from,
        to,
        sku: sku.unwrap_or_default().to_owned(),
        name: name.map(str::to_owned),
    })
}

/// Past days of a kind it takes for its measured effect to count half (shrinkage: with `n`
/// days the effect is `1 + n / (n + SHRINK) · (ratio − 1)`).
const SHRINK: f64 = 3.0;

/// The demand multiplier of each kind of day (1: like any other day).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effects {
    pub holiday: f64,
    pub promotion: f64,
    /// Past days each was measured on.
    pub holiday_days: usize,
    pub promotion_days: usize,
}

impl Default for Effects {
    fn default() -> Self {
        Effects {
            holiday: 1.0,
            promotion: 1.0,
            holiday_days: 0,
            promotion_days: 0,
        }
    }
}

impl Effects {
    pub fn of(&self, kind: DayKind) -> f64 {
        match kind {
            DayKind::Holiday => self.holiday,
            DayKind::Promotion => self.promotion,
        }
    }
}

/// Replaces every unusual day of `y` (after the first sale) by its usual demand, estimated from
/// the days that are neither unusual nor out of stock (`censored`), and returns each kind's
/// effect, measured on its days that were in stock.
pub fn set_aside(y: &mut [f64], kinds: &[Option<DayKind>], censored: &[bool]) -> Effects {
    set_aside_by(y, kinds, censored, super::methods::SEASON)
}

/// [`set_aside`] for a series whose periods repeat every `step` (1 for weeks: an unusual week
/// is compared with the usual weeks around it).
pub fn set_aside_by(y: &mut [f64], kinds: &[Option<DayKind>], censored: &[bool], step: usize) -> Effects {
    let mut effects = Effects::default();
    // Most merchants have no calendar: no copy of the series.
    if kinds.iter().all(Option::is_none) {
        return effects;
    }
    let Some(first) = y.iter().position(|&v| v > 0.0) else {
        return effects;
    };
    let observed = y.to_vec();
    let usual =
        |i: usize| kinds.get(i).copied().flatten().is_none() && !censored.get(i).copied().unwrap_or(false);
    // (sold, usual) per kind, over its in-stock days with a usual demand to compare with.
    let mut sums = [(0.0, 0.0, 0usize); 2];
    for t in first..y.len() {
        let Some(kind) = kinds.get(t).copied().flatten() else {
            continue;
        };
        let Some(e) = usual_demand(&observed, t, first, step, usual) else {
            continue;
        };
        y[t] = e;
        if !censored.get(t).copied().unwrap_or(false) && e > 0.0 {
            let s = &mut sums[kind as usize];
            s.0 += observed[t];
            s.1 += e;
            s.2 += 1;
        }
    }
    for (kind, (sold, usual, n)) in [DayKind::Holiday, DayKind::Promotion].into_iter().zip(sums) {
        if n == 0 {
            continue;
        }
        let w = n as f64 / (n as f64 + SHRINK);
        let effect = 1.0 + w * (sold / usual - 1.0);
        match kind {
            DayKind::Holiday => (effects.holiday, effects.holiday_days) = (effect, n),
            DayKind::Promotion => (effects.promotion, effects.promotion_days) = (effect, n),
        }
    }
    effects
}

/// Scales the forecast of each horizon day that is unusual (`future[d]`) by its kind's effect,
/// with quantiles to match.
pub fn apply(f: &mut SkuForecast, future: &[Option<DayKind>], effects: &Effects) {
    let mut changed = false;
    for (d, kind) in future.iter().enumerate().take(f.mean.len()) {
        if let Some(k) = kind {
            let e = effects.of(*k);
            if e != 1.0 {
                f.mean[d] *= e;
                changed = true;
            }
        }
    }
    if changed {
        super::fill_quantiles(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::forecast::{forecast_series, Settings};

    /// `weeks` weeks of 4 a day, with the days in `special` of `kind` selling `sold`.
    fn history(
        weeks: usize,
        special: &[usize],
        kind: DayKind,
        sold: f64,
    ) -> (Vec<f64>, Vec<Option<DayKind>>) {
        let mut y = vec![4.0; weeks * 7];
        let mut kinds = vec![None; y.len()];
        for &d in special {
            y[d] = sold;
            kinds[d] = Some(kind);
        }
        (y, kinds)
    }

    #[test]
    fn unusual_days_are_set_aside_and_their_effect_is_learnt_with_shrinkage() {
        // (kind, days, what they sold, effect learnt)
        let cases = [
            // Three promotion days at 3×: 1 + 3/6 · 2 = 2.
            (DayKind::Promotion, vec![20, 50, 80], 12.0, 2.0),
            // Nine: 1 + 9/12 · 2 = 2.5.
            (
                DayKind::Promotion,
                vec![10, 20, 30, 40, 50, 60, 70, 80, 90],
                12.0,
                2.5,
            ),
            // Three holidays with nothing sold: 1 + 3/6 · (−1) = 0.5.
            (DayKind::Holiday, vec![20, 50, 80], 0.0, 0.5),
        ];
        for (kind, days, sold, want) in cases {
            let (mut y, kinds) = history(14, &days, kind, sold);
            let open = vec![false; y.len()];
            let e = set_aside(&mut y, &kinds, &open);
            assert!((e.of(kind) - want).abs() < 1e-9, "{kind:?} {days:?}: {e:?}");
            assert_eq!(e.holiday_days + e.promotion_days, days.len());
            assert!(y.iter().all(|&v| v == 4.0), "set aside at the usual 4: {y:?}");
        }
        // A censored unusual day is set aside but says nothing about its kind's effect.
        let (mut y, kinds) = history(14, &[20, 50], DayKind::Promotion, 0.0);
        let mut censored = vec![false; y.len()];
        censored[20] = true;
        censored[50] = true;
        assert_eq!(set_aside(&mut y, &kinds, &censored), Effects::default());
        assert_eq!((y[20], y[50]), (4.0, 4.0));
    }

    #[test]
    fn a_calendar_file_is_read_whole_and_every_bad_line_named() {
        let good = "\u{feff}kind,from,to,sku,name\r\nholiday,2026-12-25,,,Christmas\npromotion,2026-11-27,2026-11-30,\"SKU, 1\",Black Friday\n\n";
        let p = parse_calendar(good).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].kind, p[0].from, p[0].to),
            (DayKind::Holiday, p[0].from, p[0].from)
        );
        assert_eq!(p[0].sku, "");
        assert_eq!(
            (p[1].sku.as_str(), p[1].name.as_deref()),
            ("SKU, 1", Some("Black Friday"))
        );
        assert_eq!((p[1].to - p[1].from).num_days(), 3);
        let bad = "from,kind\n2026-12-25,feast\n2026-13-01,holiday\n,holiday\n2026-12-25,promotion\n";
        let e = parse_calendar(bad).unwrap_err();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4], "{e:?}");
        assert!(e[0].message.contains("not holiday or promotion"));
        assert!(e[1].message.contains("not a date"));
        assert!(e[2].message.contains("from is missing"));
        let e =
            parse_calendar("kind,from,to\nholiday,2026-12-25,2026-12-24\npromotion,2026-01-01,2027-06-01\n")
                .unwrap_err();
        assert!(
            e[0].message.contains("before") && e[1].message.contains("longer than a year"),
            "{e:?}"
        );
        assert!(parse_calendar("kind,date\n").unwrap_err()[0]
            .message
            .contains("unknown column"));
        assert!(parse_calendar("").unwrap_err()[0].message.contains("no header"));
    }

    #[test]
    fn the_horizon_gets_each_kind_its_effect_with_coherent_quantiles() {
        let (mut y, kinds) = history(20, &[30, 60, 90, 120], DayKind::Promotion, 12.0);
        let open = vec![false; y.len()];
        let e = set_aside(&mut y, &kinds, &open);
        let mut f = forecast_series(&y, &Settings::default());
        let plain = f.clone();
        let mut future = vec![None; 28];
        future[3] = Some(DayKind::Promotion);
        future[10] = Some(DayKind::Holiday); // no holiday seen: no effect
        apply(&mut f, &future, &e);
        assert!((f.mean[3] - plain.mean[3] * e.promotion).abs() < 1e-9);
        assert!(f.p90[3] > plain.p90[3]);
        assert_eq!(f.mean[10], plain.mean[10]);
        assert_eq!(f.mean[4], plain.mean[4]);
        for d in 0..28 {
            assert!(f.p50[d] <= f.p90[d] && f.p90[d] <= f.p95[d]);
        }
    }
}
