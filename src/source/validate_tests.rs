//! Tests of [`super::validate`]: one per bad-record class, and property
//! tests over random and mutated bytes: no panic, every accepted message
//! decodes into exactly one row, and a batch of them splits into rows and
//! reasons with nothing lost.

use super::decode::{decode, RawBatch};
use super::input::Input;
use super::validate::*;
use crate::config::{Limits, OUTPUT_OVERHEAD};
use crate::schema::{Reason, CAMPAIGN_FIELDS};

/// The seed job's declaration (`sql/input.sql`).
fn seed() -> &'static Input {
    static SEED: std::sync::OnceLock<Input> = std::sync::OnceLock::new();
    SEED.get_or_init(|| Input::seed().unwrap())
}

/// How the seed job classifies one message: validation, then its `CHECK`
/// on the decoded row.
fn classify(payload: Option<&[u8]>, limits: &Limits) -> Result<(), Refusal> {
    validate(payload, limits, seed())?;
    let mut raw = RawBatch::default();
    raw.push(0, 0, None, payload);
    let decoded = decode(&raw, seed(), limits).unwrap();
    match decoded.bad.into_iter().next() {
        Some(bad) => Err(bad.refusal),
        None => Ok(()),
    }
}

const EXAMPLE: &str = r#"{"restaurant_id": "123e4567-e89b-12d3-a456-426614174000","adv_campaign_id": "123e4567-e89b-12d3-a456-426614174003","adv_campaign_content": "first campaign","adv_campaign_owner": "Ivanov Ivan Ivanovich","adv_campaign_owner_contact": "iiivanov@restaurant.ru","adv_campaign_datetime_start": 1659203516,"adv_campaign_datetime_end": 2659207116,"datetime_created": 1659131516}"#;

fn reason_of(payload: Option<&[u8]>) -> Option<Reason> {
    classify(payload, &Limits::default()).err().map(|r| r.reason)
}

fn reason(text: &str) -> Option<Reason> {
    reason_of(Some(text.as_bytes()))
}

#[test]
fn the_example_and_extra_fields_are_accepted() {
    assert_eq!(reason(EXAMPLE), None);
    assert_eq!(reason(&EXAMPLE.replace('{', r#"{"promo": {"code": [1, 2.5, null]}, "#)), None);
    assert_eq!(reason(&format!(" \n{EXAMPLE}\n ")), None, "surrounding whitespace is fine");
    assert_eq!(reason(&EXAMPLE.replace("first campaign", r#"caf\u00e9 \"quoted\" \n"#)), None);
}

#[test]
fn each_bad_record_class_gets_its_reason() {
    let cases: Vec<(String, Reason)> = vec![
        (String::new(), Reason::Empty),
        ("{not json".into(), Reason::NotJson),
        (EXAMPLE[..EXAMPLE.len() - 10].into(), Reason::Truncated),
        ("[1, 2]".into(), Reason::NotAnObject),
        ("42".into(), Reason::NotAnObject),
        ("null".into(), Reason::NotAnObject),
        (format!("{EXAMPLE}{EXAMPLE}"), Reason::SeveralValues),
        (format!("{EXAMPLE} x"), Reason::SeveralValues),
        (EXAMPLE.replace(r#""adv_campaign_owner": "Ivanov Ivan Ivanovich","#, ""), Reason::MissingField),
        (EXAMPLE.replace(r#""Ivanov Ivan Ivanovich""#, "null"), Reason::NullField),
        (EXAMPLE.replace("1659131516", r#""1659131516""#), Reason::WrongType),
        (EXAMPLE.replace("1659131516", "1.9"), Reason::WrongType),
        (EXAMPLE.replace("1659131516", "1659131516.0"), Reason::WrongType),
        (EXAMPLE.replace(r#""first campaign""#, "17"), Reason::WrongType),
        (EXAMPLE.replace(r#""first campaign""#, "true"), Reason::WrongType),
        (EXAMPLE.replace(r#""first campaign""#, "[]"), Reason::WrongType),
        (EXAMPLE.replace("1659131516", "9223372036854775808"), Reason::OutOfRange),
        (EXAMPLE.replace("1659131516", "-99999999999999999999"), Reason::OutOfRange),
        (EXAMPLE.replace('{', r#"{"datetime_created": 1, "#), Reason::DuplicateField),
        (EXAMPLE.replace('{', r#"{"x": 1, "x": 2, "#), Reason::DuplicateField),
        (EXAMPLE.replace("first campaign", r"bad \u0000 text"), Reason::NulCharacter),
        (EXAMPLE.replace("2659207116", "1659203515"), Reason::Check("ends_before_start")),
        (EXAMPLE.replace("first campaign", r"lone \ud800 surrogate"), Reason::NotJson),
    ];
    for (text, expected) in cases {
        let refusal = classify(Some(text.as_bytes()), &Limits::default()).expect_err(&text);
        assert_eq!(refusal.reason, expected, "{text}: {}", refusal.message);
        assert!(!refusal.message.is_empty());
    }
    assert_eq!(reason_of(None), Some(Reason::Empty));
    assert_eq!(reason_of(Some(b"{\"a\": \"\xff\"}")), Some(Reason::NotUtf8));
}

#[test]
fn the_message_names_the_field() {
    let refusal = classify(Some(EXAMPLE.replace("1659131516", "1.9").as_bytes()), &Limits::default()).unwrap_err();
    assert_eq!(refusal.message, "field datetime_created should be an integer, found the number 1.9 (not an integer)");
}

#[test]
fn size_limits_apply_to_the_message_and_its_output() {
    let limits = Limits { max_record_bytes: EXAMPLE.len() - 1, max_output_bytes: 1_000_000 };
    assert_eq!(classify(Some(EXAMPLE.as_bytes()), &limits).unwrap_err().reason, Reason::TooLarge);
    let limits = Limits { max_record_bytes: 1 << 20, max_output_bytes: EXAMPLE.len() + OUTPUT_OVERHEAD - 1 };
    assert_eq!(classify(Some(EXAMPLE.as_bytes()), &limits).unwrap_err().reason, Reason::OutputTooLarge);
    let limits = Limits { max_record_bytes: EXAMPLE.len(), max_output_bytes: EXAMPLE.len() + OUTPUT_OVERHEAD };
    assert_eq!(classify(Some(EXAMPLE.as_bytes()), &limits), Ok(()));
}

#[test]
fn codes_are_distinct_and_snake_case() {
    let codes: std::collections::HashSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
    assert!(codes.iter().all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
}

/// xorshift64*: a small deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random message: pure noise, or the example with a few bytes flipped,
/// cut, duplicated or replaced by JSON-ish tokens.
fn arbitrary_message(rng: &mut Rng) -> Vec<u8> {
    const TOKENS: [&str; 12] = ["\"", "{", "}", "[", ",", ":", "null", "1.5", "-", "\\u0000", "9e99", "\"x\":1,"];
    if rng.below(4) == 0 {
        return (0..rng.below(64)).map(|_| rng.next() as u8).collect();
    }
    let mut bytes = EXAMPLE.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] = rng.next() as u8,
            1 => bytes.truncate(at),
            2 => bytes.splice(at..at, TOKENS[rng.below(TOKENS.len())].bytes()).for_each(drop),
            _ => {
                let digit = b'0' + rng.below(10) as u8;
                if let Some(b) = bytes.iter_mut().skip(at).find(|b| b.is_ascii_digit()) {
                    *b = digit;
                }
            }
        }
    }
    bytes
}

#[test]
fn arbitrary_bytes_never_panic_and_accepted_ones_decode_to_one_row() {
    let rng_seed = 0x5eed_0f5a_7c1e_7001_u64;
    let mut rng = Rng(rng_seed);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..20_000 {
        let bytes = arbitrary_message(&mut rng);
        match validate(Some(&bytes), &Limits::default(), seed()) {
            Ok(_) => {
                accepted += 1;
                let mut raw = RawBatch::default();
                raw.push(0, i, None, Some(&bytes));
                let decoded = decode(&raw, seed(), &Limits::default()).unwrap();
                let checked = decoded.bad.iter().all(|b| b.refusal.reason == Reason::Check("ends_before_start"));
                assert!(
                    decoded.batch.num_rows() + decoded.bad.len() == 1 && checked,
                    "accepted but not one row (or one failed CHECK): {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            Err(refusal) => {
                refused += 1;
                assert!(!refusal.message.is_empty());
            }
        }
    }
    assert!(accepted > 1000 && refused > 1000, "seed {rng_seed}: {accepted} accepted, {refused} refused");
}

#[test]
fn a_batch_of_arbitrary_messages_splits_into_rows_and_reasons() {
    let mut rng = Rng(0x0bad_5eed_1234_5678);
    for round in 0..20 {
        let messages: Vec<Vec<u8>> = (0..200).map(|_| arbitrary_message(&mut rng)).collect();
        let mut raw = RawBatch::default();
        let mut refused = Vec::new();
        for (offset, bytes) in messages.iter().enumerate() {
            let offset = offset as i64;
            raw.push(round, offset, Some(b"key".as_slice()), Some(bytes));
            if classify(Some(bytes), &Limits::default()).is_err() {
                refused.push(offset);
            }
        }
        let decoded = decode(&raw, seed(), &Limits::default()).unwrap();
        let bad: Vec<i64> = decoded.bad.iter().map(|b| b.offset).collect();
        assert_eq!(bad, refused, "round {round}: the batch refuses exactly what validation refuses, in order");
        assert_eq!(
            decoded.batch.num_rows() + bad.len(),
            messages.len(),
            "round {round}: every message a row or a reason"
        );
    }
}

/// Limits large enough for the hostile messages below to reach the field
/// checks (with the defaults they are `too_large`).
const ROOMY: Limits = Limits { max_record_bytes: 4 << 20, max_output_bytes: 8 << 20 };

/// `n` distinct unknown fields (`"f0": 0, "f1": 0, ...`) before the
/// example's own.
fn with_unknown_fields(n: usize) -> String {
    let fields: String = (0..n).map(|i| format!(r#""f{i}":0,"#)).collect();
    EXAMPLE.replacen('{', &format!("{{{fields}"), 1)
}

#[test]
fn a_message_with_more_fields_than_the_cap_is_refused_naming_the_limit() {
    let refusal = classify(Some(with_unknown_fields(100_000).as_bytes()), &ROOMY).unwrap_err();
    assert_eq!(refusal.reason.code(), "too_many_fields", "{}", refusal.message);
    assert!(refusal.message.contains("more than 1000 fields"), "{}", refusal.message);
    let at_the_cap = 1000 - CAMPAIGN_FIELDS.len();
    assert_eq!(classify(Some(with_unknown_fields(at_the_cap).as_bytes()), &ROOMY), Ok(()));
    let over = classify(Some(with_unknown_fields(at_the_cap + 1).as_bytes()), &ROOMY).unwrap_err();
    assert_eq!(over.reason.code(), "too_many_fields");
}

#[test]
fn a_duplicate_among_many_unknown_fields_is_found() {
    let text = with_unknown_fields(900).replacen('{', r#"{"f899":1,"#, 1);
    let refusal = classify(Some(text.as_bytes()), &ROOMY).unwrap_err();
    assert_eq!(refusal.reason, Reason::DuplicateField);
    assert_eq!(refusal.message, "field f899 appears twice");
}

#[test]
fn message_text_quoted_in_a_refusal_is_bounded_and_escaped() {
    let name = format!("x\nERROR forged line\r\u{1b}[31m{}", "y".repeat(100_000));
    let quoted = serde_json::to_string(&name).unwrap();
    let text = EXAMPLE.replacen('{', &format!("{{{quoted}: 1, {quoted}: 2, "), 1);
    let refusal = classify(Some(text.as_bytes()), &ROOMY).unwrap_err();
    assert_eq!(refusal.reason, Reason::DuplicateField);
    let message = &refusal.message;
    assert!(message.len() <= 512, "{} bytes", message.len());
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.starts_with(r"field x\nERROR forged line\r\u{1b}[31myyy"), "{message:?}");
    assert!(message.contains("more bytes"), "the cut is marked: {message:?}");
}
