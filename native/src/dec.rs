//! Exact decimals with Python `decimal` semantics where the engine needs them.
//!
//! A value is `coeff * 10^exp` with an unbounded integer coefficient, so sums are exact
//! whatever their length (the reference adds in an unbounded context). Derived fields are
//! computed like Python's `ARITHMETIC` context: 28 significant digits, half-even.
//! Only values matter to the engine's output (every number is written canonically), so
//! the exponent a result carries is free as long as its value is Python's.

use num_bigint::{BigInt, Sign};
use num_integer::Integer;
use num_traits::{One, Signed, ToPrimitive, Zero};
use std::cmp::Ordering;

pub const PREC: usize = 28;

/// `coeff * 10^exp`: small values inline (16 bytes, no allocation), the rest boxed.
#[derive(Clone, Debug)]
pub enum Dec {
    Small(i64, i32),
    Big(Box<(BigInt, i64)>),
}

/// Why a decimal operation failed, named like Python's signal.
#[derive(Debug, PartialEq, Eq)]
pub enum DecError {
    InvalidOperation,
}

const POW10_I64: [i64; 19] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
    100_000_000_000_000_000,
    1_000_000_000_000_000_000,
];

fn pow10(n: u64) -> BigInt {
    if (n as usize) < POW10_I64.len() {
        BigInt::from(POW10_I64[n as usize])
    } else {
        num_traits::pow(BigInt::from(10u32), n as usize)
    }
}

/// `k` when `n` is `10^k`.
fn power_of_ten(n: u64) -> Option<u32> {
    let k = n.checked_ilog10()?;
    (*POW10_I64.get(k as usize)? as u64 == n).then_some(k)
}

/// Decimal digits of |n| (1 for zero).
pub fn ndigits(n: &BigInt) -> usize {
    if n.is_zero() {
        return 1;
    }
    if let Some(small) = n.magnitude().to_u128() {
        return small.ilog10() as usize + 1;
    }
    // digits from bits (log10(2) ~ 30103/100000, in integers), then corrected exactly
    let bits = n.bits();
    let mut estimate = ((bits - 1) * 30_103 / 100_000) as usize + 1;
    let magnitude = n.abs();
    if magnitude >= pow10(estimate as u64) {
        estimate += 1;
    } else if estimate > 1 && magnitude < pow10(estimate as u64 - 1) {
        estimate -= 1;
    }
    estimate
}

/// `value * 10^shift` if it stays in i64.
fn scaled(value: i64, shift: i64) -> Option<i64> {
    if value == 0 {
        return Some(0);
    }
    POW10_I64
        .get(usize::try_from(shift).ok()?)
        .and_then(|p| value.checked_mul(*p))
}

impl Dec {
    /// The value of `coeff * 10^exp`, inline when it fits.
    pub fn from_parts(coeff: BigInt, exp: i64) -> Dec {
        if coeff.is_zero() {
            return Dec::Small(0, 0);
        }
        match (coeff.to_i64(), i32::try_from(exp)) {
            (Some(small), Ok(exp)) => Dec::Small(small, exp),
            _ => Dec::Big(Box::new((coeff, exp))),
        }
    }

    fn parts(&self) -> (BigInt, i64) {
        match self {
            Dec::Small(coeff, exp) => (BigInt::from(*coeff), *exp as i64),
            Dec::Big(big) => (big.0.clone(), big.1),
        }
    }

    fn exp(&self) -> i64 {
        match self {
            Dec::Small(_, exp) => *exp as i64,
            Dec::Big(big) => big.1,
        }
    }

    pub fn zero() -> Dec {
        Dec::Small(0, 0)
    }

    pub fn from_i64(value: i64) -> Dec {
        Dec::Small(value, 0)
    }

    pub fn one() -> Dec {
        Dec::from_i64(1)
    }

    pub fn is_zero(&self) -> bool {
        match self {
            Dec::Small(coeff, _) => *coeff == 0,
            Dec::Big(big) => big.0.is_zero(),
        }
    }

    pub fn is_negative(&self) -> bool {
        match self {
            Dec::Small(coeff, _) => *coeff < 0,
            Dec::Big(big) => big.0.sign() == Sign::Minus,
        }
    }

    fn digits(&self) -> usize {
        match self {
            Dec::Small(coeff, _) => coeff
                .unsigned_abs()
                .checked_ilog10()
                .map_or(1, |d| d as usize + 1),
            Dec::Big(big) => ndigits(&big.0),
        }
    }

    /// The exponent of the most significant digit (Python's `adjusted()`).
    pub fn adjusted(&self) -> i64 {
        self.exp() + self.digits() as i64 - 1
    }

    /// A decimal string: `[+-]digits[.digits][e[+-]digits]` (also `.5` and `5.`), as
    /// `Decimal(text)` reads it. The exponent saturates far beyond any accepted number.
    pub fn parse(text: &str) -> Option<Dec> {
        let bytes = text.as_bytes();
        let mut at = 0;
        let mut negative = false;
        if at < bytes.len() && (bytes[at] == b'+' || bytes[at] == b'-') {
            negative = bytes[at] == b'-';
            at += 1;
        }
        let mut digits = String::with_capacity(bytes.len());
        let mut fraction = 0i64;
        let mut seen_digit = false;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            digits.push(bytes[at] as char);
            at += 1;
            seen_digit = true;
        }
        if at < bytes.len() && bytes[at] == b'.' {
            at += 1;
            while at < bytes.len() && bytes[at].is_ascii_digit() {
                digits.push(bytes[at] as char);
                fraction += 1;
                at += 1;
                seen_digit = true;
            }
        }
        if !seen_digit {
            return None;
        }
        let mut exp: i64 = 0;
        if at < bytes.len() && (bytes[at] == b'e' || bytes[at] == b'E') {
            at += 1;
            let mut exp_negative = false;
            if at < bytes.len() && (bytes[at] == b'+' || bytes[at] == b'-') {
                exp_negative = bytes[at] == b'-';
                at += 1;
            }
            let start = at;
            while at < bytes.len() && bytes[at].is_ascii_digit() {
                exp = exp
                    .saturating_mul(10)
                    .saturating_add((bytes[at] - b'0') as i64);
                at += 1;
            }
            if at == start {
                return None;
            }
            exp = exp.min(4_000_000_000_000_000_000);
            if exp_negative {
                exp = -exp;
            }
        }
        if at != bytes.len() {
            return None;
        }
        if digits.len() <= 18 {
            let small: i64 = digits.parse().ok()?;
            return Some(Dec::from_parts(
                BigInt::from(if negative { -small } else { small }),
                exp - fraction,
            ));
        }
        let mut coeff = BigInt::parse_bytes(digits.as_bytes(), 10)?;
        if negative {
            coeff = -coeff;
        }
        Some(Dec::from_parts(coeff, exp - fraction))
    }

    fn aligned(a: &Dec, b: &Dec) -> (BigInt, BigInt, i64) {
        let ((ca, ea), (cb, eb)) = (a.parts(), b.parts());
        let exp = ea.min(eb);
        let x = if ea > exp {
            ca * pow10((ea - exp) as u64)
        } else {
            ca
        };
        let y = if eb > exp {
            cb * pow10((eb - exp) as u64)
        } else {
            cb
        };
        (x, y, exp)
    }

    /// Both inline, at the same exponent, if that fits.
    fn small_aligned(&self, other: &Dec) -> Option<(i64, i64, i32)> {
        let (Dec::Small(a, ea), Dec::Small(b, eb)) = (self, other) else {
            return None;
        };
        let exp = (*ea).min(*eb);
        Some((
            scaled(*a, (*ea - exp) as i64)?,
            scaled(*b, (*eb - exp) as i64)?,
            exp,
        ))
    }

    /// a + b, exactly.
    pub fn add_exact(&self, other: &Dec) -> Dec {
        if let Some((a, b, exp)) = self.small_aligned(other) {
            if let Some(sum) = a.checked_add(b) {
                return if sum == 0 {
                    Dec::zero()
                } else {
                    Dec::Small(sum, exp)
                };
            }
        }
        if other.is_zero() {
            return self.clone();
        }
        if self.is_zero() {
            return other.clone();
        }
        let (x, y, exp) = Dec::aligned(self, other);
        Dec::from_parts(x + y, exp)
    }

    pub fn cmp_value(&self, other: &Dec) -> Ordering {
        let (na, nb) = (self.is_negative(), other.is_negative());
        let rank = |d: &Dec, negative: bool| {
            if negative {
                0
            } else if d.is_zero() {
                1
            } else {
                2
            }
        };
        let (ra, rb) = (rank(self, na), rank(other, nb));
        if ra != rb {
            return ra.cmp(&rb);
        }
        if ra == 1 {
            return Ordering::Equal;
        }
        if let Some((a, b, _)) = self.small_aligned(other) {
            return a.cmp(&b);
        }
        let (aa, ab) = (self.adjusted(), other.adjusted());
        if aa != ab {
            let magnitude = aa.cmp(&ab);
            return if na { magnitude.reverse() } else { magnitude };
        }
        let (x, y, _) = Dec::aligned(self, other);
        x.cmp(&y)
    }

    /// Rounded to `PREC` significant digits, half-even (`sticky`: a non-zero part was
    /// already cut off below the coefficient).
    fn rounded(coeff: BigInt, exp: i64, sticky: bool) -> Dec {
        let digits = ndigits(&coeff);
        if digits <= PREC {
            return Dec::from_parts(coeff, exp);
        }
        let drop = (digits - PREC) as u64;
        let negative = coeff.sign() == Sign::Minus;
        let magnitude = coeff.abs();
        let divisor = pow10(drop);
        let (mut kept, tail) = magnitude.div_rem(&divisor);
        let twice = &tail * 2u32;
        let up = match twice.cmp(&divisor) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => sticky || kept.is_odd(),
        };
        if up {
            kept += 1u32;
        }
        let mut exp = exp + drop as i64;
        if ndigits(&kept) > PREC {
            kept /= 10u32;
            exp += 1;
        }
        Dec::from_parts(if negative { -kept } else { kept }, exp)
    }

    pub fn round_context(&self) -> Dec {
        if self.digits() <= PREC {
            return self.clone();
        }
        let (coeff, exp) = self.parts();
        Dec::rounded(coeff, exp, false)
    }

    pub fn add(&self, other: &Dec) -> Dec {
        self.add_exact(other).round_context()
    }

    pub fn sub(&self, other: &Dec) -> Dec {
        self.add(&other.neg())
    }

    pub fn neg(&self) -> Dec {
        match self {
            Dec::Small(coeff, exp) if *coeff != i64::MIN => Dec::Small(-coeff, *exp),
            _ => {
                let (coeff, exp) = self.parts();
                Dec::from_parts(-coeff, exp)
            }
        }
    }

    pub fn minus(&self) -> Dec {
        self.neg().round_context()
    }

    pub fn abs(&self) -> Dec {
        if self.is_negative() {
            self.neg().round_context()
        } else {
            self.round_context()
        }
    }

    pub fn mul(&self, other: &Dec) -> Dec {
        let ((ca, ea), (cb, eb)) = (self.parts(), other.parts());
        Dec::rounded(ca * cb, ea + eb, false)
    }

    /// a / b rounded to PREC digits (b must not be zero).
    pub fn div(&self, other: &Dec) -> Dec {
        // By a power of ten (a unit conversion such as `bytes / 1000000000`) the quotient
        // is exact and only the exponent moves: Python's value, without big integers.
        if let (Dec::Small(ca, ea), Dec::Small(cb, eb)) = (self, other) {
            if let Some(k) = power_of_ten(cb.unsigned_abs()) {
                let coeff = if *cb < 0 { ca.checked_neg() } else { Some(*ca) };
                let exp = i32::try_from(*ea as i64 - *eb as i64 - k as i64);
                if let (Some(coeff), Ok(exp)) = (coeff, exp) {
                    return Dec::Small(coeff, exp);
                }
            }
        }
        self.div_rounded(other)
    }

    /// `div` in full: the quotient to 28 significant digits, half-even.
    fn div_rounded(&self, other: &Dec) -> Dec {
        if self.is_zero() {
            return Dec::zero();
        }
        let (na, nb) = (self.digits() as i64, other.digits() as i64);
        let shift = (PREC as i64 + 3 + nb - na).max(0) as u64;
        let negative = self.is_negative() != other.is_negative();
        let ((ca, ea), (cb, eb)) = (self.parts(), other.parts());
        let dividend = ca.abs() * pow10(shift);
        let (quotient, remainder) = dividend.div_rem(&cb.abs());
        let exp = ea - eb - shift as i64;
        let result = Dec::rounded(quotient, exp, !remainder.is_zero());
        if negative {
            result.neg()
        } else {
            result
        }
    }

    /// Python's `remainder`: the sign of the dividend, a truncated integer quotient that
    /// must fit the precision.
    pub fn rem(&self, other: &Dec) -> Result<Dec, DecError> {
        let (x, y, exp) = Dec::aligned(self, other);
        let (quotient, remainder) = x.abs().div_rem(&y.abs());
        if ndigits(&quotient) > PREC {
            return Err(DecError::InvalidOperation);
        }
        let remainder = if self.is_negative() {
            -remainder
        } else {
            remainder
        };
        Ok(Dec::rounded(remainder, exp, false))
    }

    /// To an integer, rounding toward -inf (`floor`) or +inf; never to the precision.
    pub fn to_integral(&self, floor: bool) -> Dec {
        let (coeff, exp) = self.parts();
        if exp >= 0 {
            return self.clone();
        }
        let divisor = pow10((-exp) as u64);
        let (quotient, remainder) = coeff.div_mod_floor(&divisor);
        let coeff = if floor || remainder.is_zero() {
            quotient
        } else {
            quotient + 1
        };
        Dec::from_parts(coeff, 0)
    }

    /// `quantize(10^exp, ROUND_HALF_UP)`: an error when the result needs more than PREC
    /// digits.
    pub fn quantize_half_up(&self, exp: i64) -> Result<Dec, DecError> {
        let (own, own_exp) = self.parts();
        let coeff = if own_exp >= exp {
            own * pow10((own_exp - exp) as u64)
        } else {
            let divisor = pow10((exp - own_exp) as u64);
            let (kept, tail) = own.abs().div_rem(&divisor);
            let kept = if &tail * 2u32 >= divisor {
                kept + 1
            } else {
                kept
            };
            if self.is_negative() {
                -kept
            } else {
                kept
            }
        };
        if ndigits(&coeff) > PREC {
            return Err(DecError::InvalidOperation);
        }
        Ok(Dec::from_parts(coeff, exp))
    }

    /// The coefficient's digits without trailing zeros, and the exponent that goes with
    /// them (zero is "0", 0).
    fn stripped(&self) -> (String, i64) {
        match self {
            Dec::Small(coeff, exp) => {
                let mut small = coeff.unsigned_abs();
                let mut exp = *exp as i64;
                if small == 0 {
                    return ("0".to_string(), 0);
                }
                while small % 10 == 0 {
                    small /= 10;
                    exp += 1;
                }
                (small.to_string(), exp)
            }
            Dec::Big(big) => {
                let mut exp = big.1;
                if let Some(mut small) = big.0.magnitude().to_u128() {
                    // 28 significant digits (a derived field) fit: no BigInt division
                    if small == 0 {
                        return ("0".to_string(), 0);
                    }
                    while small % 10 == 0 {
                        small /= 10;
                        exp += 1;
                    }
                    return (small.to_string(), exp);
                }
                let mut coeff = big.0.abs();
                let ten = BigInt::from(10u32);
                loop {
                    let (q, r) = coeff.div_rem(&ten);
                    if !r.is_zero() {
                        break;
                    }
                    coeff = q;
                    exp += 1;
                }
                (coeff.to_string(), exp)
            }
        }
    }

    /// `str(canonical(x))` of the reference: no trailing zeros, whole numbers below
    /// 10**28 without exponent, the rest as Python writes a Decimal.
    pub fn canonical_text(&self) -> String {
        if self.is_zero() {
            return "0".to_string();
        }
        let (digits, exp) = self.stripped();
        let adjusted = exp + digits.len() as i64 - 1;
        let sign = if self.is_negative() { "-" } else { "" };
        if exp > 0 && adjusted < PREC as i64 {
            return format!("{}{}{}", sign, digits, "0".repeat(exp as usize));
        }
        format!("{}{}", sign, sci_string(&digits, exp))
    }

    /// `canonical_text` written into `out`, without allocating for ordinary numbers.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let Dec::Small(coeff, exp) = self else {
            out.extend_from_slice(self.canonical_text().as_bytes());
            return;
        };
        let (mut magnitude, mut exp) = (coeff.unsigned_abs(), *exp as i64);
        if magnitude == 0 {
            out.push(b'0');
            return;
        }
        while magnitude % 10 == 0 {
            magnitude /= 10;
            exp += 1;
        }
        let digits = magnitude.ilog10() as i64 + 1;
        let sign = if *coeff < 0 { "-" } else { "" };
        if exp >= 0 && exp + digits - 1 < PREC as i64 {
            let _ = write!(out, "{}{}", sign, magnitude);
            out.extend(std::iter::repeat_n(b'0', exp as usize));
        } else if exp < 0 && exp + digits > -6 && -exp <= 18 {
            let scale = 10u64.pow((-exp) as u32);
            let (whole, fraction) = (magnitude / scale, magnitude % scale);
            let width = (-exp) as usize;
            let _ = write!(out, "{}{}.{:0width$}", sign, whole, fraction, width = width);
        } else {
            out.extend_from_slice(self.canonical_text().as_bytes());
        }
    }

    /// Whether the value is a whole multiple of 10^exp.
    pub fn is_whole_multiple_of_exp(&self, exp: i64) -> bool {
        if self.is_zero() || self.exp() >= exp {
            return true;
        }
        self.stripped().1 >= exp
    }
}

/// Python's `Decimal.__str__` of a positive coefficient's digits and an exponent.
pub fn sci_string(digits: &str, exp: i64) -> String {
    let leftdigits = exp + digits.len() as i64;
    let dotplace = if exp <= 0 && leftdigits > -6 {
        leftdigits
    } else {
        1
    };
    let (intpart, fracpart) = if dotplace <= 0 {
        (
            "0".to_string(),
            format!(".{}{}", "0".repeat((-dotplace) as usize), digits),
        )
    } else if dotplace as usize >= digits.len() {
        (
            format!("{}{}", digits, "0".repeat(dotplace as usize - digits.len())),
            String::new(),
        )
    } else {
        (
            digits[..dotplace as usize].to_string(),
            format!(".{}", &digits[dotplace as usize..]),
        )
    };
    let exponent = if leftdigits == dotplace {
        String::new()
    } else {
        format!("E{:+}", leftdigits - dotplace)
    };
    format!("{}{}{}", intpart, fracpart, exponent)
}

impl PartialEq for Dec {
    fn eq(&self, other: &Dec) -> bool {
        self.cmp_value(other) == Ordering::Equal
    }
}

pub fn one() -> BigInt {
    BigInt::one()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Dec {
        Dec::parse(text).unwrap()
    }

    #[test]
    fn canonical_text_is_pythons() {
        for (text, want) in [
            ("123.4500", "123.45"),
            ("1E+2", "100"),
            ("-0.000", "0"),
            ("1E-20", "1E-20"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1E-7"),
            ("100000000000000000000000000000", "1E+29"),
            (
                "99999999999999999999999999999.99999999999999999999",
                "99999999999999999999999999999.99999999999999999999",
            ),
            ("1500000000000000000000000000000", "1.5E+30"),
            (
                "9999999999999999999999999999",
                "9999999999999999999999999999",
            ),
            ("10000000000000000000000000000", "1E+28"),
            ("-1.10", "-1.1"),
            // past i64, within u128: stripped without BigInt division
            (
                "-12345678901234567890123.4500000",
                "-12345678901234567890123.45",
            ),
            (
                "1234567890123456789000000000000",
                "1.234567890123456789E+30",
            ),
            // past u128
            (
                "123456789012345678901234567890123456789000.000",
                "1.23456789012345678901234567890123456789E+41",
            ),
        ] {
            assert_eq!(d(text).canonical_text(), want, "{}", text);
        }
    }

    #[test]
    fn canonical_text_written_in_place_is_the_same() {
        for text in [
            "123.4500",
            "1E+2",
            "-0.000",
            "1E-20",
            "0.000001",
            "0.0000001",
            "-10.05",
            "100000000000000000000000000000",
            "9999999999999999999999999999",
            "10000000000000000000000000000",
            "-1.10",
            "0.5",
            "12",
            "-7E-3",
            "1.000000000000000001",
        ] {
            let mut out = Vec::new();
            d(text).write_canonical(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                d(text).canonical_text(),
                "{}",
                text
            );
        }
    }

    #[test]
    fn division_by_a_power_of_ten_moves_the_exponent_to_the_same_value() {
        for (a, b) in [
            ("123456789", "1000000000"),
            ("-5", "10"),
            ("7.25", "-100"),
            ("0", "1000"),
            ("9223372036854775807", "1E+3"),
            ("-9223372036854775808", "-1"),
            ("1", "1000000000000000000"),
            ("3", "0.01"),
        ] {
            let (x, y) = (Dec::parse(a).unwrap(), Dec::parse(b).unwrap());
            let (fast, full) = (x.div(&y), x.div_rounded(&y));
            assert_eq!(fast.canonical_text(), full.canonical_text(), "{a} / {b}");
        }
        assert_eq!(power_of_ten(1), Some(0));
        assert_eq!(power_of_ten(1_000_000_000), Some(9));
        assert_eq!(power_of_ten(1024), None);
        assert_eq!(power_of_ten(0), None);
        assert_eq!(power_of_ten(u64::MAX), None);
    }

    #[test]
    fn division_rounds_to_28_digits_half_even() {
        assert_eq!(
            d("1").div(&d("3")).canonical_text(),
            "0.3333333333333333333333333333"
        );
        assert_eq!(
            d("2").div(&d("3")).canonical_text(),
            "0.6666666666666666666666666667"
        );
        assert_eq!(d("1").div(&d("4")).canonical_text(), "0.25");
        assert_eq!(d("-7").div(&d("1000")).canonical_text(), "-0.007");
    }

    #[test]
    fn remainder_and_rounding_follow_python() {
        assert_eq!(d("7").rem(&d("-3")).unwrap().canonical_text(), "1");
        assert_eq!(d("-7").rem(&d("3")).unwrap().canonical_text(), "-1");
        assert!(d("1E+30").rem(&d("3")).is_err());
        assert_eq!(d("2.5").quantize_half_up(0).unwrap().canonical_text(), "3");
        assert_eq!(
            d("-2.5").quantize_half_up(0).unwrap().canonical_text(),
            "-3"
        );
        assert_eq!(d("-2.5").to_integral(true).canonical_text(), "-3");
        assert_eq!(d("-2.5").to_integral(false).canonical_text(), "-2");
        assert_eq!(
            d("1.2345678901234567890123456789012")
                .abs()
                .canonical_text(),
            "1.234567890123456789012345679"
        );
    }

    #[test]
    fn digits_of_big_numbers_are_counted_exactly() {
        for exponent in [38u32, 39, 40, 100, 1000] {
            let power = num_traits::pow(BigInt::from(10u32), exponent as usize);
            assert_eq!(ndigits(&power), exponent as usize + 1);
            assert_eq!(ndigits(&(&power - 1u32)), exponent as usize);
            let negative: BigInt = -(&power + 1u32);
            assert_eq!(ndigits(&negative), exponent as usize + 1);
        }
    }

    #[test]
    fn comparison_is_by_value() {
        assert_eq!(d("1.0").cmp_value(&d("1")), Ordering::Equal);
        assert_eq!(d("-2").cmp_value(&d("-10")), Ordering::Greater);
        assert_eq!(d("1E+2").cmp_value(&d("99.9")), Ordering::Greater);
    }
}
