//! Tests of [`super`]: decoding, refusals in order, the slow path.

use super::*;
use arrow::array::{Array, Int64Array, StringArray};

const EXAMPLE: &str = r#"{"restaurant_id": "123e4567-e89b-12d3-a456-426614174000","adv_campaign_id": "123e4567-e89b-12d3-a456-426614174003","adv_campaign_content": "first campaign","adv_campaign_owner": "Ivanov Ivan Ivanovich","adv_campaign_owner_contact": "iiivanov@restaurant.ru","adv_campaign_datetime_start": 1659203516,"adv_campaign_datetime_end": 2659207116,"datetime_created": 1659131516}"#;

fn raw(payloads: &[Option<&str>]) -> RawBatch {
    let mut raw = RawBatch::default();
    for (i, p) in payloads.iter().enumerate() {
        raw.push(0, i as i64 + 100, Some(b"k".as_slice()), p.map(str::as_bytes));
    }
    raw
}

fn decode_campaigns(payloads: &[Option<&str>]) -> Decoded {
    decode(&raw(payloads), &Input::seed().unwrap(), &Limits::default()).unwrap()
}

#[test]
fn decodes_the_example_message() {
    let out = decode_campaigns(&[Some(EXAMPLE), Some(EXAMPLE)]);
    assert!(out.bad.is_empty());
    assert_eq!(out.batch.num_rows(), 2);
    let ids = out.batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(ids.value(0), "123e4567-e89b-12d3-a456-426614174003");
    let end = out.batch.column(6).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(end.value(1), 2659207116);
    assert_eq!(
        count_ended_before(&out.batch, "adv_campaign_datetime_end", 2659207116),
        0,
        "the end itself is still valid"
    );
    assert_eq!(count_ended_before(&out.batch, "adv_campaign_datetime_end", 2659207117), 2);
}

#[test]
fn bad_messages_are_named_and_good_ones_kept() {
    let missing = EXAMPLE.replace(r#""adv_campaign_id": "123e4567-e89b-12d3-a456-426614174003","#, "");
    let wrong_type = EXAMPLE.replace("1659131516", r#""yesterday""#);
    let out = decode_campaigns(&[
        Some(EXAMPLE),
        Some("{not json"),
        Some(&missing),
        None,
        Some(&wrong_type),
        Some("42"),
        Some(&format!("{EXAMPLE}{EXAMPLE}")),
        Some(EXAMPLE),
    ]);
    assert_eq!(out.batch.num_rows(), 2);
    assert_eq!(out.batch.column(0).null_count(), 0);
    let offsets: Vec<i64> = out.bad.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, vec![101, 102, 103, 104, 105, 106]);
    assert!(out.bad[1].refusal.message.contains("adv_campaign_id"), "{:?}", out.bad);
    assert_eq!(out.bad[0].value.as_deref(), Some(b"{not json".as_slice()), "kept byte for byte");
    assert_eq!(out.bad[0].key.as_deref(), Some(b"k".as_slice()));
    assert_eq!(out.bad[2].value, None, "a null value stays null");
}

#[test]
fn truncated_message_does_not_swallow_the_next_one() {
    let truncated = &EXAMPLE[..EXAMPLE.len() - 10];
    let out = decode_campaigns(&[Some(truncated), Some(EXAMPLE)]);
    assert_eq!(out.batch.num_rows(), 1);
    assert_eq!(out.bad.len(), 1);
    assert_eq!(out.bad[0].offset, 100);
}

#[test]
fn extra_fields_are_ignored() {
    let extra = EXAMPLE.replace("{", r#"{"promo_code": "X1", "#);
    let out = decode_campaigns(&[Some(&extra)]);
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    assert_eq!(out.batch.num_rows(), 1);
}

#[test]
fn large_batches_decode_in_chunks_in_order() {
    let n = 2 * CHUNK_ROWS + 5;
    let payloads: Vec<String> = (0..n).map(|i| EXAMPLE.replace("first campaign", &format!("c{i}"))).collect();
    let refs: Vec<Option<&str>> = payloads.iter().map(|p| Some(p.as_str())).collect();
    let out = decode_campaigns(&refs);
    assert_eq!(out.batch.num_rows(), n);
    let content = out.batch.column(2).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(content.value(n - 1), format!("c{}", n - 1));
}

#[test]
fn a_cleared_raw_batch_holds_only_what_comes_after() {
    let mut raw = raw(&[Some(EXAMPLE), None, Some("x")]);
    raw.clear();
    assert!(raw.is_empty());
    raw.push(3, 7, None, Some(b"y".as_slice()));
    assert_eq!(raw.messages().collect::<Vec<_>>(), vec![(3, 7, None, Some(b"y".as_slice()))]);
}

#[test]
fn empty_batch_decodes_to_no_rows() {
    let out = decode_campaigns(&[]);
    assert_eq!(out.batch.num_rows(), 0);
    assert_eq!(out.batch.schema(), Input::seed().unwrap().schema());
}
