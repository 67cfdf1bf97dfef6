//! Which carrier a tracking number belongs to, from its format and check digit.
//!
//! Formats overlap (a 12-digit number may be FedEx or ZTO), so detection returns every candidate,
//! surest first: a passing check digit beats a bare pattern. An unknown format yields no
//! candidate and is left to the tracking provider's own detection.

use serde::Serialize;

/// Carriers souk recognises by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Carrier {
    Ups,
    Usps,
    Fedex,
    Dhl,
    SfExpress,
    ChinaPost,
    ChinaEms,
    Yto,
    Zto,
}

impl Carrier {
    /// The slug used in APIs and storage (AfterShip's slugs where they have one).
    pub fn slug(self) -> &'static str {
        match self {
            Carrier::Ups => "ups",
            Carrier::Usps => "usps",
            Carrier::Fedex => "fedex",
            Carrier::Dhl => "dhl",
            Carrier::SfExpress => "sf-express",
            Carrier::ChinaPost => "china-post",
            Carrier::ChinaEms => "china-ems",
            Carrier::Yto => "yto",
            Carrier::Zto => "zto-express",
        }
    }
}

/// How sure a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The format fits; there is no check digit to confirm it.
    Pattern,
    /// The format fits and its check digit is right.
    CheckDigit,
}

/// A possible carrier for a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub carrier: Carrier,
    pub confidence: Confidence,
}

fn digits(s: &str) -> Option<Vec<u32>> {
    s.chars().map(|c| c.to_digit(10)).collect()
}

/// UPS 1Z numbers: "1Z", 15 characters, a check digit. Letters count as (position in the
/// alphabet + 2) mod 10; odd positions weigh 1, even ones 2.
fn ups_ok(n: &str) -> bool {
    let b = n.as_bytes();
    if b.len() != 18 || &b[..2] != b"1Z" || !b[2..].iter().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let Some(check) = (b[17] as char).to_digit(10) else {
        return false;
    };
    let sum: u32 = b[2..17]
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let v = if c.is_ascii_digit() {
                (c - b'0') as u32
            } else {
                ((c - b'A') as u32 + 2) % 10
            };
            if i % 2 == 1 {
                2 * v
            } else {
                v
            }
        })
        .sum();
    (10 - sum % 10) % 10 == check
}

/// Mod 10 with weights 3, 1, 3, … from the right (USPS IMpb 20/22 digits, GS1).
fn mod10_31_ok(d: &[u32]) -> bool {
    let (body, check) = d.split_at(d.len() - 1);
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, v)| if i % 2 == 0 { 3 * v } else { *v })
        .sum();
    (10 - sum % 10) % 10 == check[0]
}

/// FedEx Express 12 digits: weights 1, 3, 7 from the right over the first 11, sum mod 11
/// (10 → 0).
fn fedex12_ok(d: &[u32]) -> bool {
    let w = [1, 3, 7];
    let sum: u32 = d[..11].iter().rev().enumerate().map(|(i, v)| v * w[i % 3]).sum();
    sum % 11 % 10 == d[11]
}

/// DHL Express 10 digits: the first nine as a number, mod 7.
fn dhl_ok(d: &[u32]) -> bool {
    let n = d[..9].iter().fold(0u64, |a, &v| a * 10 + v as u64);
    (n % 7) as u32 == d[9]
}

/// UPU S10 (international post, EMS): two letters, eight digits, a check digit, a country code.
/// Weights 8 6 4 2 3 5 9 7; check = 11 − sum mod 11 (10 → 0, 11 → 5).
pub fn s10_ok(n: &str) -> Option<(&str, &str)> {
    let b = n.as_bytes();
    if b.len() != 13
        || !b[..2].iter().all(u8::is_ascii_uppercase)
        || !b[11..].iter().all(u8::is_ascii_uppercase)
    {
        return None;
    }
    let d = digits(&n[2..11])?;
    let w = [8, 6, 4, 2, 3, 5, 9, 7];
    let sum: u32 = d[..8].iter().zip(w).map(|(a, b)| a * b).sum();
    let check = match 11 - sum % 11 {
        10 => 0,
        11 => 5,
        c => c,
    };
    (check == d[8]).then(|| (&n[..2], &n[11..]))
}

/// Normalises what a merchant typed: spaces and dashes dropped, upper case.
pub fn normalise(number: &str) -> String {
    number
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

/// The carriers a tracking number may belong to, surest first.
pub fn detect(number: &str) -> Vec<Candidate> {
    let n = normalise(number);
    let mut out = Vec::new();
    let mut add = |carrier, confidence| out.push(Candidate { carrier, confidence });
    if ups_ok(&n) {
        add(Carrier::Ups, Confidence::CheckDigit);
    }
    if let Some((service, country)) = s10_ok(&n) {
        match (service.as_bytes()[0], country) {
            (b'E', "CN") => add(Carrier::ChinaEms, Confidence::CheckDigit),
            (_, "CN") => add(Carrier::ChinaPost, Confidence::CheckDigit),
            (_, "US") => add(Carrier::Usps, Confidence::CheckDigit),
            _ => {}
        }
    }
    if let Some(rest) = n.strip_prefix("SF") {
        if (12..=13).contains(&rest.len()) && rest.bytes().all(|c| c.is_ascii_digit()) {
            add(Carrier::SfExpress, Confidence::Pattern);
        }
    }
    if let Some(rest) = n.strip_prefix("YT") {
        if rest.len() == 13 && rest.bytes().all(|c| c.is_ascii_digit()) {
            add(Carrier::Yto, Confidence::Pattern);
        }
    }
    if let Some(d) = digits(&n) {
        match d.len() {
            20 | 22 if matches!(d[0] * 10 + d[1], 91..=95) && mod10_31_ok(&d) => {
                add(Carrier::Usps, Confidence::CheckDigit)
            }
            12 => {
                if fedex12_ok(&d) {
                    add(Carrier::Fedex, Confidence::CheckDigit);
                }
                if matches!(d[0], 7 | 5) {
                    add(Carrier::Zto, Confidence::Pattern);
                }
                add(Carrier::SfExpress, Confidence::Pattern);
            }
            14 if d[0] == 7 => add(Carrier::Zto, Confidence::Pattern),
            15 if fedex12_ok(&d[3..]) => add(Carrier::Fedex, Confidence::CheckDigit),
            10 if dhl_ok(&d) => add(Carrier::Dhl, Confidence::CheckDigit),
            _ => {}
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.confidence));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(n: &str) -> Option<Carrier> {
        detect(n).first().map(|c| c.carrier)
    }

    #[test]
    fn published_ups_samples_pass_and_a_changed_digit_fails() {
        // UPS developer samples.
        assert_eq!(first("1Z999AA10123456784"), Some(Carrier::Ups));
        assert_eq!(first("1Z 12345E 6605272234"), Some(Carrier::Ups));
        assert_eq!(
            first("1z12345e6605272234"),
            Some(Carrier::Ups),
            "typed in lower case"
        );
        assert!(detect("1Z999AA10123456785").is_empty());
    }

    #[test]
    fn s10_numbers_name_the_postal_service() {
        // 1·8 + 2·6 + 3·4 + 4·2 + 5·3 + 6·5 + 7·9 + 8·7 = 204; 204 mod 11 = 6; 11 − 6 = 5.
        assert_eq!(first("RR123456785CN"), Some(Carrier::ChinaPost));
        assert_eq!(first("EE123456785CN"), Some(Carrier::ChinaEms));
        assert_eq!(first("EC123456785US"), Some(Carrier::Usps));
        assert!(detect("RR123456784CN").is_empty());
        // A sum of 0 gives 11 − 0 = 11, written as 5.
        assert_eq!(s10_ok("RR000000005CN").map(|x| x.1), Some("CN"));
        assert!(s10_ok("RR000000004CN").is_none());
    }

    #[test]
    fn usps_fedex_dhl_check_digits() {
        // USPS IMpb 22 digits, body 9400 1000 0000 0000 0000 0 and a check digit: weights 3, 1,
        // 3, … from the right put 3 on the 9, 1 on the 4 and 3 on the 1: 27 + 4 + 3 = 34 → 6.
        assert_eq!(first("9400 1000 0000 0000 0000 06"), Some(Carrier::Usps));
        assert!(detect("9400100000000000000007").is_empty());
        // FedEx 12: digits 1..9,0,1 with weights 1,3,7 from the right: 1·1+0·3+9·7+8·1+7·3+6·7+
        // 5·1+4·3+3·7+2·1+1·3 = 1+0+63+8+21+42+5+12+21+2+3 = 178; 178 mod 11 = 2.
        let c = detect("123456789012");
        assert_eq!(c[0].carrier, Carrier::Fedex);
        assert_eq!(c[0].confidence, Confidence::CheckDigit);
        assert!(
            c.iter().any(|c| c.carrier == Carrier::SfExpress),
            "12 digits also fit SF"
        );
        // DHL Express: 123456789 mod 7 = 1.
        assert_eq!(first("1234567891"), Some(Carrier::Dhl));
        assert!(detect("1234567892").is_empty());
    }

    #[test]
    fn chinese_express_patterns_and_unknown_formats() {
        assert_eq!(first("SF1234567890123"), Some(Carrier::SfExpress));
        assert_eq!(first("YT1234567890123"), Some(Carrier::Yto));
        assert_eq!(first("73123456789012"), Some(Carrier::Zto));
        // 12 digits starting with 7 and a wrong FedEx check digit: ZTO first (SF also fits).
        let c = detect("731234567890");
        assert_eq!(c[0].carrier, Carrier::Zto, "{c:?}");
        assert!(detect("HELLO-WORLD").is_empty());
        assert!(detect("").is_empty());
    }
}
