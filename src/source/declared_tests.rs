//! Tests of a declared input other than the seed's: every type, NULL and
//! DEFAULT, no coercion, unknown fields, and CHECKs on decoded rows.

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int16Type, Int64Type, TimestampMicrosecondType};

use super::decode::{decode, Decoded, RawBatch};
use super::input::Input;
use crate::config::Limits;
use crate::job::Job;

const INPUT: &str = "CREATE TABLE events (
    id BIGINT NOT NULL,
    name TEXT,
    small SMALLINT DEFAULT 7,
    ratio DOUBLE PRECISION,
    ok BOOLEAN NOT NULL DEFAULT true,
    at TIMESTAMPTZ,
    CONSTRAINT positive_id CHECK (id > 0),
    CHECK (ratio IS NULL OR ratio < 1000 / small)
)";

fn input(unknown: &str) -> Input {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.sql"), INPUT).unwrap();
    let toml = format!("[input]\nunknown_fields = \"{unknown}\"\n[sink.postgres]\ntable = \"t\"\n");
    std::fs::write(dir.path().join("job.toml"), toml).unwrap();
    Input::new(&Job::load(dir.path()).unwrap()).unwrap()
}

fn run(input: &Input, messages: &[&str]) -> Decoded {
    let mut raw = RawBatch::default();
    for (i, m) in messages.iter().enumerate() {
        raw.push(0, i as i64, None, Some(m.as_bytes()));
    }
    decode(&raw, input, &Limits::default()).unwrap()
}

/// `(offset, reason, message)` of each refused message.
fn refusals(decoded: &Decoded) -> Vec<(i64, String, String)> {
    decoded.bad.iter().map(|b| (b.offset, b.refusal.reason.code().to_string(), b.refusal.message.clone())).collect()
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch.column_by_name(name).unwrap().as_ref()
}

#[test]
fn absent_nullable_fields_are_null_and_absent_defaulted_ones_take_the_default() {
    let decoded = run(&input("ignore"), &[r#"{"id": 1}"#, r#"{"id": 2, "small": null, "ok": false, "name": "x"}"#]);
    assert!(decoded.bad.is_empty(), "{:?}", refusals(&decoded));
    let b = &decoded.batch;
    assert!(column(b, "name").is_null(0) && column(b, "ratio").is_null(0) && column(b, "at").is_null(0));
    assert_eq!(column(b, "small").as_primitive::<Int16Type>().value(0), 7, "absent: the default");
    assert!(column(b, "small").is_null(1), "an explicit null stays NULL");
    assert!(column(b, "ok").as_boolean().value(0));
    assert!(!column(b, "ok").as_boolean().value(1));
}

#[test]
fn nothing_is_coerced() {
    let decoded = run(
        &input("ignore"),
        &[
            r#"{"id": "123"}"#,
            r#"{"id": 1.9}"#,
            r#"{"id": 1.0}"#,
            r#"{"id": 1, "id": 2}"#,
            r#"{"id": 1, "small": 40000}"#,
            r#"{"id": 1, "ok": 1}"#,
            r#"{"id": 1, "name": 5}"#,
            r#"{"id": 1, "ok": null}"#,
            r#"{"name": "no id"}"#,
            r#"{"id": 1, "ratio": 2}"#,
        ],
    );
    let reasons: Vec<String> = refusals(&decoded).into_iter().map(|r| r.1).collect();
    assert_eq!(
        reasons,
        [
            "wrong_type",
            "wrong_type",
            "wrong_type",
            "duplicate_field",
            "out_of_range",
            "wrong_type",
            "wrong_type",
            "null_field",
            "missing_field"
        ]
    );
    assert_eq!(decoded.batch.num_rows(), 1, "an integer is an exact double");
    assert_eq!(column(&decoded.batch, "ratio").as_primitive::<Float64Type>().value(0), 2.0);
    assert_eq!(decoded.bad[4].refusal.message, "field small: 40000 is outside int2");
}

#[test]
fn timestamps_are_rfc3339_or_epoch_seconds_and_nothing_finer_than_microseconds() {
    let decoded = run(
        &input("ignore"),
        &[
            r#"{"id": 1, "at": "2024-01-02T03:04:05.123456Z"}"#,
            r#"{"id": 1, "at": 1704164645}"#,
            r#"{"id": 1, "at": "2024-01-02T06:04:05+03:00"}"#,
            r#"{"id": 1, "at": "2024-01-02 03:04:05"}"#,
            r#"{"id": 1, "at": "2024-01-02T03:04:05.1234567Z"}"#,
            r#"{"id": 1, "at": "1704164645"}"#,
        ],
    );
    let at = column(&decoded.batch, "at").as_primitive::<TimestampMicrosecondType>();
    assert_eq!(at.values().to_vec(), [1_704_164_645_123_456, 1_704_164_645_000_000, 1_704_164_645_000_000]);
    let offsets: Vec<i64> = decoded.bad.iter().map(|b| b.offset).collect();
    assert_eq!(offsets, [3, 4, 5]);
    assert!(decoded.bad[1].refusal.message.contains("finer than microseconds"), "{:?}", refusals(&decoded));
}

#[test]
fn unknown_fields_are_ignored_or_refused() {
    let message = r#"{"id": 1, "extra": [1, 2]}"#;
    assert!(run(&input("ignore"), &[message]).bad.is_empty());
    let refused = refusals(&run(&input("refuse"), &[message]));
    assert_eq!(refused, [(0, "unknown_field".into(), "field extra is not declared in input.sql".into())]);
}

#[test]
fn a_false_check_refuses_its_row_naming_the_constraint_and_null_passes() {
    let decoded = run(
        &input("ignore"),
        &[r#"{"id": 5}"#, r#"{"id": -1}"#, r#"{"id": 6, "ratio": 500.5}"#, r#"{"id": 7, "ratio": 1.5}"#],
    );
    assert_eq!(
        refusals(&decoded),
        [
            (1, "positive_id".into(), "CHECK positive_id (id > 0) is false for id = -1".into()),
            (
                2,
                "check_failed".into(),
                "CHECK (ratio IS NULL OR ratio < 1000 / small) is false for small = 7, ratio = 500.5".into()
            )
        ]
    );
    let ids = column(&decoded.batch, "id").as_primitive::<Int64Type>();
    assert_eq!(ids.values().to_vec(), [5, 7], "the rest flows, in order");
}

#[test]
fn a_check_that_fails_to_evaluate_on_one_row_refuses_only_that_row() {
    // 1000 / small with small = 0: a division by zero on that row alone.
    let decoded = run(&input("ignore"), &[r#"{"id": 1, "ratio": 1}"#, r#"{"id": 2, "ratio": 1, "small": 0}"#]);
    let refused = refusals(&decoded);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!((refused[0].0, refused[0].1.as_str()), (1, "check_failed"));
    assert!(refused[0].2.contains("could not be evaluated"), "{}", refused[0].2);
    assert_eq!(decoded.batch.num_rows(), 1);
}

#[test]
fn a_check_that_does_not_plan_is_refused_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let write = |sql: &str| std::fs::write(dir.path().join("input.sql"), sql).unwrap();
    std::fs::write(dir.path().join("job.toml"), "[sink.postgres]\ntable = \"t\"\n").unwrap();
    let compile = |dir: &Path| Input::new(&Job::load(dir).unwrap()).unwrap_err().to_string();
    write("CREATE TABLE t (\n  a BIGINT,\n  CHECK (b > 0)\n)");
    let err = compile(dir.path());
    assert!(err.starts_with("job: ") && err.contains("input.sql:3:10") && err.contains("b"), "{err}");
    write("CREATE TABLE t (a BIGINT CHECK (a + 1))");
    assert!(compile(dir.path()).contains("not a boolean"));
    write("CREATE TABLE t (a BIGINT CONSTRAINT wrong_type CHECK (a > 0))");
    assert!(compile(dir.path()).contains("one of sparklet's own reason codes"));
    write("CREATE TABLE t (a BIGINT CHECK (random() > a))");
    assert!(compile(dir.path()).contains("same answer"));
}

#[test]
fn an_integer_a_float_cannot_hold_exactly_is_out_of_range() {
    let decoded = run(
        &input("ignore"),
        &[r#"{"id": 1, "ratio": 9007199254740993}"#, r#"{"id": 1, "ratio": -9223372036854775808}"#],
    );
    let refused = refusals(&decoded);
    assert_eq!(refused[0].1, "out_of_range", "{refused:?}");
    assert_eq!(refused[0].2, "field ratio: 9007199254740993 has no exact float64 value");
    assert_eq!(decoded.batch.num_rows(), 1, "-2^63 is a power of two: exact");
}

const NESTED: &str = "CREATE TABLE offers (
    id BIGINT NOT NULL,
    tags TEXT[],
    address STRUCT<city TEXT, floors SMALLINT[]>,
    CONSTRAINT few_tags CHECK (cardinality(tags) <= 3)
)";

fn nested(unknown: &str) -> Input {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.sql"), NESTED).unwrap();
    let toml = format!("[input]\nunknown_fields = \"{unknown}\"\n[sink.postgres]\ntable = \"t\"\n");
    std::fs::write(dir.path().join("job.toml"), toml).unwrap();
    Input::new(&Job::load(dir.path()).unwrap()).unwrap()
}

#[test]
fn arrays_and_objects_decode_into_lists_and_structs_with_null_elements_and_members() {
    let decoded = run(
        &nested("ignore"),
        &[
            r#"{"id": 1, "tags": ["vegan", null], "address": {"city": "Oslo", "floors": [1, 2], "x": {"y": 1}}}"#,
            r#"{"id": 2, "tags": [], "address": {}}"#,
            r#"{"id": 3, "tags": null}"#,
        ],
    );
    assert!(decoded.bad.is_empty(), "{:?}", refusals(&decoded));
    let tags = column(&decoded.batch, "tags").as_list::<i32>();
    let first = tags.value(0);
    assert_eq!(first.as_string::<i32>().value(0), "vegan");
    assert!(first.is_null(1), "a null element stays NULL");
    assert_eq!(tags.value(1).len(), 0);
    assert!(tags.is_null(2));
    let address = column(&decoded.batch, "address").as_struct();
    assert_eq!(address.column_by_name("city").unwrap().as_string::<i32>().value(0), "Oslo");
    let floors = address.column_by_name("floors").unwrap().as_list::<i32>();
    assert_eq!(floors.value(0).as_primitive::<Int16Type>().values(), &[1, 2]);
    assert!(address.column_by_name("city").unwrap().is_null(1), "an absent member is NULL");
    assert!(address.is_null(2), "an absent struct is NULL");
}

#[test]
fn a_wrong_element_or_member_is_refused_naming_its_place() {
    let input = nested("ignore");
    let decoded = run(
        &input,
        &[
            r#"{"id": 1, "tags": ["a", 2]}"#,
            r#"{"id": 2, "address": {"floors": [1, 70000]}}"#,
            r#"{"id": 3, "address": ["Oslo"]}"#,
            r#"{"id": 4, "tags": "vegan"}"#,
            r#"{"id": 5, "address": {"city": "a", "city": "b"}}"#,
            r#"{"id": 6, "tags": ["a", "b", "c", "d"]}"#,
            r#"{"id": 7, "address": {"floors": [1.5]}}"#,
        ],
    );
    assert_eq!(
        refusals(&decoded),
        [
            (0, "wrong_type".into(), "field tags[1] should be a string, found the integer 2".into()),
            (1, "out_of_range".into(), "field address.floors[1]: 70000 is outside int2".into()),
            (2, "wrong_type".into(), "field address should be an object, found an array".into()),
            (3, "wrong_type".into(), "field tags should be an array, found a string".into()),
            (4, "duplicate_field".into(), "field address.city appears twice".into()),
            (5, "few_tags".into(), refusals(&decoded)[5].2.clone()),
            (
                6,
                "wrong_type".into(),
                "field address.floors[0] should be an integer, found the number 1.5 (not an integer)".into()
            ),
        ]
    );
    assert_eq!(decoded.batch.num_rows(), 0);
}

#[test]
fn unknown_members_are_refused_when_unknown_fields_are() {
    let decoded = run(&nested("refuse"), &[r#"{"id": 1, "address": {"city": "Oslo", "zip": "0150"}}"#]);
    assert_eq!(
        refusals(&decoded),
        [(0, "unknown_field".into(), "field address.zip is not declared in input.sql".into())]
    );
}
