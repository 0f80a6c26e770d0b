//! `streams.usage.validate.CatalogRules.validate`, check for check and word for word.
//!
//! Two things are left to Python, per measurement, and say so (`Verdict::Undecided`):
//! a timestamp in any ISO 8601 form other than `YYYY-MM-DD[T ]HH:MM:SS[.f…](Z|±HH:MM)`
//! (Python's `datetime.fromisoformat` accepts many), and a rejection whose reason quotes
//! a value Python would `repr` that is not plain printable ASCII. The caller asks the
//! reference validator about those few and hands its verdict back (`Override`).

use crate::dec::Dec;
use crate::decode::Json;
use crate::dedup::{FastMap, FastSet};
use crate::expressions::{evaluate, Expression};
use std::borrow::Cow;

pub const MAX_ID_LENGTH: usize = 200;
pub const STRING_MAPS: [&str; 5] = ["who", "what", "where", "other", "metadata"];
pub const NUMBER_MAPS: [&str; 3] = ["measure", "income", "cost"];
const SCALARS: [&str; 5] = ["uid", "meter", "account", "ts", "ets"];
const MAX_INTEGER_DIGITS: i64 = 30;
const MAX_FRACTION_DIGITS: i64 = 20;

pub const TOO_LARGE: &str = "has more than 30 digits before the decimal point (at most 30 digits before the decimal point and 20 after it; numbers are never rounded)";
pub const TOO_PRECISE: &str = "has more than 20 digits after the decimal point (at most 30 digits before the decimal point and 20 after it; numbers are never rounded)";
pub const NOT_A_NUMBER: &str = "expected a number";

pub struct MeterRules {
    pub code: String,
    pub fields: FastMap<String, FastSet<String>>,
    pub derived_codes: FastSet<String>,
    pub required: Vec<(String, String, String)>, // (path, code, reason)
    pub broken: Option<(String, String)>,
    pub derived: Vec<(String, String, Expression)>, // (code, map name, expression)
}

pub struct Rules {
    pub meters: FastMap<String, MeterRules>,
    pub past_ms: i64,
    pub future_ms: i64,
    pub too_old: String,
    pub too_new: String,
}

/// A valid measurement. Its text borrows the message's bytes, not the decoded tree (a
/// string with escapes is copied), so each message's tree is dropped once judged.
pub struct Valid<'a> {
    pub uid: Cow<'a, str>,
    pub meter: Cow<'a, str>,
    pub account: Cow<'a, str>,
    pub ts: i64,
    pub numbers: Vec<(Cow<'a, str>, Dec)>,
    pub strings: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// Text of the decoded tree that outlives it: borrowed from the message, or copied.
fn lasting<'a>(text: &Cow<'a, str>) -> Cow<'a, str> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(text),
        Cow::Owned(text) => Cow::Owned(text.clone()),
    }
}

pub enum Verdict<'a> {
    Valid(Valid<'a>),
    Reject(String, String),
    Undecided,
}

/// Python's verdict on a measurement this module left undecided.
#[derive(Clone, Debug)]
pub enum Override {
    Reject(String, String),
    Ts(i64),
}

fn reject<'a>(field: &str, reason: impl Into<String>) -> Verdict<'a> {
    Verdict::Reject(field.to_string(), reason.into())
}

/// `repr(text)` of a str when it is printable ASCII (or the three escapes Python
/// writes short); None otherwise.
pub fn py_repr(text: &str) -> Option<String> {
    if !text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\r' || b == b'\t')
    {
        return None;
    }
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    Some(out)
}

fn bad_identifier<'a>(name: &str, value: &Json) -> Verdict<'a> {
    match value {
        Json::Null => reject(name, format!("{} is required", name)),
        Json::Str(_) => reject(
            name,
            format!("must be 1 to {} characters long", MAX_ID_LENGTH),
        ),
        _ => reject(name, "expected a string"),
    }
}

fn identifier<'a>(value: &Json<'a>) -> Option<Cow<'a, str>> {
    match value {
        Json::Str(text) if !text.is_empty() && text.chars().nth(MAX_ID_LENGTH).is_none() => {
            Some(lasting(text))
        }
        _ => None,
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(bytes: &[u8], at: usize, count: usize) -> Option<i64> {
    let slice = bytes.get(at..at + count)?;
    if !slice.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(slice.iter().fold(0i64, |n, b| n * 10 + (b - b'0') as i64))
}

/// Epoch ms of `YYYY-MM-DD[T ]HH:MM:SS[.f…](Z|±HH:MM)`, the forms producers send;
/// None for anything else (Python decides those).
pub fn fast_timestamp(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (hour, minute, second) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !(1971..=9998).contains(&year)
        || !(1..=12).contains(&month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day < 1 || day > days_in_month[(month - 1) as usize] {
        return None;
    }
    let mut at = 19;
    let mut micros = 0i64;
    if b[at] == b'.' {
        let start = at + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let count = end - start;
        if count == 0 {
            return None;
        }
        // Python keeps microseconds: further digits are cut off, not rounded
        let kept = count.min(6);
        micros = digits(b, start, kept)? * 10i64.pow((6 - kept) as u32);
        at = end;
    }
    let offset_minutes = match &b[at..] {
        b"Z" => 0,
        rest if rest.len() == 6 && (rest[0] == b'+' || rest[0] == b'-') && rest[3] == b':' => {
            let (oh, om) = (digits(rest, 1, 2)?, digits(rest, 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let minutes = oh * 60 + om;
            if rest[0] == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1000 + micros.div_euclid(1000))
}

/// `exact_number` of a JSON value: the exact Decimal, or why it is refused.
pub fn exact_number(value: &Json) -> Result<Dec, &'static str> {
    let Json::Num(text, integer) = value else {
        return Err(NOT_A_NUMBER);
    };
    if *integer {
        let digits = text.trim_start_matches('-').len() as i64;
        if digits > MAX_INTEGER_DIGITS {
            return Err(TOO_LARGE);
        }
        return Dec::parse(text).ok_or(NOT_A_NUMBER);
    }
    let number = Dec::parse(text).ok_or(NOT_A_NUMBER)?;
    if number.is_zero() {
        return Ok(Dec::zero());
    }
    if number.adjusted() >= MAX_INTEGER_DIGITS {
        return Err(TOO_LARGE);
    }
    if !number.is_whole_multiple_of_exp(-MAX_FRACTION_DIGITS) {
        return Err(TOO_PRECISE);
    }
    Ok(number)
}

fn repr_value(value: &Json) -> Option<String> {
    match value {
        Json::Str(text) => py_repr(text),
        Json::Bool(true) => Some("True".into()),
        Json::Bool(false) => Some("False".into()),
        Json::Num(text, true) if text.len() <= 31 => Some(if *text == "-0" {
            "0".to_string()
        } else {
            text.to_string()
        }),
        _ => None,
    }
}

fn unknown<'a>(rules: &MeterRules, name: &str, code: &str) -> Verdict<'a> {
    let Some(quoted) = py_repr(code) else {
        return Verdict::Undecided;
    };
    let meter = py_repr(&rules.code).unwrap_or_default();
    let reason = if rules.derived_codes.contains(code) {
        format!(
            "field {} of meter {} is derived and cannot be sent",
            quoted, meter
        )
    } else {
        format!("unknown field {} for meter {} in {}", quoted, meter, name)
    };
    reject(&format!("{}.{}", name, code), reason)
}

/// Check one decoded measurement against its meter; compute its derived fields.
pub fn validate<'a>(
    raw: &Json<'a>,
    now_ms: i64,
    rules: &Rules,
    decided: Option<&Override>,
) -> Verdict<'a> {
    let forced_ts = match decided {
        Some(Override::Reject(field, reason)) => return reject(field, reason.clone()),
        Some(Override::Ts(ts)) => Some(*ts),
        None => None,
    };
    let Json::Obj(members) = raw else {
        return reject("measurement", "expected a JSON object");
    };
    let mut scalars: [Option<&Json>; 4] = [None; 4];
    for (i, name) in ["uid", "meter", "account", "ts"].iter().enumerate() {
        scalars[i] = raw.get(name);
        if scalars[i].is_none() {
            return reject(name, format!("{} is required", name));
        }
    }
    let [Some(uid), Some(meter), Some(account), Some(ts_text)] = scalars else {
        unreachable!("checked above");
    };
    let Some(uid_text) = identifier(uid) else {
        return bad_identifier("uid", uid);
    };
    let meter_rules = match meter {
        Json::Str(code) => rules.meters.get(code.as_ref()),
        _ => None,
    };
    let Some(meter_rules) = meter_rules else {
        if matches!(meter, Json::Null) {
            return reject("meter", "meter is required");
        }
        return match repr_value(meter) {
            Some(quoted) => reject("meter", format!("unknown meter {}", quoted)),
            None => Verdict::Undecided,
        };
    };
    if let Some((field, reason)) = &meter_rules.broken {
        return reject(field, reason.clone());
    }
    let Some(account_text) = identifier(account) else {
        return bad_identifier("account", account);
    };
    let ts = match forced_ts {
        Some(ts) => ts,
        None => {
            let Json::Str(text) = ts_text else {
                return reject("ts", "expected an ISO 8601 date-time string");
            };
            let Some(ts) = fast_timestamp(text) else {
                return Verdict::Undecided;
            };
            if ts < now_ms - rules.past_ms {
                return reject("ts", rules.too_old.clone());
            }
            if ts > now_ms + rules.future_ms {
                return reject("ts", rules.too_new.clone());
            }
            match raw.get("ets") {
                None | Some(Json::Null) => {}
                Some(Json::Str(text)) => {
                    let Some(ets) = fast_timestamp(text) else {
                        return Verdict::Undecided;
                    };
                    if ets < ts {
                        return reject("ets", "ets must not be before ts");
                    }
                }
                Some(_) => return reject("ets", "expected an ISO 8601 date-time string"),
            }
            ts
        }
    };
    let mut numbers: Vec<(Cow<'a, str>, Dec)> = Vec::with_capacity(3);
    let mut strings: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(3);
    for (name, values) in members {
        let name: &str = name;
        let numeric = if NUMBER_MAPS.contains(&name) {
            true
        } else if STRING_MAPS.contains(&name) {
            false
        } else if SCALARS.contains(&name) {
            continue;
        } else {
            return reject(name, "unknown property");
        };
        let Json::Obj(items) = values else {
            return reject(name, "expected an object");
        };
        let allowed = &meter_rules.fields[name];
        for (code, value) in items {
            if !allowed.contains(code.as_ref()) {
                return unknown(meter_rules, name, code);
            }
            if numeric {
                match exact_number(value) {
                    Ok(number) => set(&mut numbers, lasting(code), number),
                    Err(reason) => return reject(&format!("{}.{}", name, code), reason),
                }
            } else {
                match value {
                    Json::Str(text) => set(&mut strings, lasting(code), lasting(text)),
                    _ => return reject(&format!("{}.{}", name, code), "expected a string"),
                }
            }
        }
    }
    for (path, code, reason) in &meter_rules.required {
        if !numbers.iter().any(|(c, _)| c == code) && !strings.iter().any(|(c, _)| c == code) {
            return reject(path, reason.clone());
        }
    }
    for (code, name, expression) in &meter_rules.derived {
        if !expression
            .fields
            .iter()
            .all(|f| numbers.iter().any(|(c, _)| c == f.as_str()))
        {
            continue;
        }
        let lookup = |field: &str| {
            numbers
                .iter()
                .find(|(c, _)| c == field)
                .map(|(_, v)| v.clone())
        };
        match evaluate(&expression.tree, &lookup) {
            Ok(value) => set(&mut numbers, Cow::Owned(code.clone()), value),
            Err(message) => {
                let quoted = py_repr(code).unwrap_or_default();
                return reject(
                    &format!("{}.{}", name, code),
                    format!("derived field {}: {}", quoted, message),
                );
            }
        }
    }
    Verdict::Valid(Valid {
        uid: uid_text,
        meter: match meter {
            Json::Str(code) => lasting(code),
            _ => unreachable!("a known meter is a string"),
        },
        account: account_text,
        ts,
        numbers,
        strings,
    })
}

fn set<K: AsRef<str>, T>(items: &mut Vec<(K, T)>, code: K, value: T) {
    match items.iter_mut().find(|(c, _)| c.as_ref() == code.as_ref()) {
        Some(item) => item.1 = value,
        None => items.push((code, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::parse;

    #[test]
    fn timestamps_in_the_usual_form_are_read_exactly() {
        assert_eq!(
            fast_timestamp("2026-11-18T00:00:00.123456789Z"),
            Some(1_794_960_000_123)
        );
        assert_eq!(
            fast_timestamp("2026-11-18T00:00:00+00:00"),
            Some(1_794_960_000_000)
        );
        assert_eq!(
            fast_timestamp("2026-11-18T01:00:00.123999+01:00"),
            Some(1_794_960_000_123)
        );
        assert_eq!(
            fast_timestamp("2026-11-18 00:00:00Z"),
            Some(1_794_960_000_000)
        );
        assert_eq!(fast_timestamp("2026-02-29T00:00:00Z"), None);
        assert_eq!(fast_timestamp("2026-11-18T00:00:00"), None);
    }

    #[test]
    fn numbers_follow_the_exact_number_rule() {
        let value = |text: &'static str| parse(text.as_bytes()).unwrap();
        assert_eq!(
            exact_number(&value("1.50")).unwrap().canonical_text(),
            "1.5"
        );
        assert_eq!(exact_number(&value("1E-21")).unwrap_err(), TOO_PRECISE);
        assert_eq!(exact_number(&value("1e30")).unwrap_err(), TOO_LARGE);
        assert_eq!(
            exact_number(&value("1000000000000000000000000000000")).unwrap_err(),
            TOO_LARGE
        );
        assert_eq!(
            exact_number(&value("0e-99999999999999999999"))
                .unwrap()
                .canonical_text(),
            "0"
        );
        assert_eq!(exact_number(&value("true")).unwrap_err(), NOT_A_NUMBER);
    }

    #[test]
    fn repr_is_pythons_for_plain_text() {
        assert_eq!(py_repr("a'b").unwrap(), "\"a'b\"");
        assert_eq!(py_repr("a'b\"").unwrap(), "'a\\'b\"'");
        assert_eq!(py_repr("x\\y\n").unwrap(), "'x\\\\y\\n'");
        assert!(py_repr("é").is_none());
    }
}
