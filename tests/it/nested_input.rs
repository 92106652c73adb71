//! A job whose input declares an array and a struct: both decoded by
//! arrow-json, read by the SQL (`array_has`, a member, `cardinality`), and
//! written to Kafka as JSON arrays and objects and to Postgres as a `text[]`,
//! an `int4[]` and a `jsonb` column; crashed between the sinks and recovered
//! exactly once. Against the real broker and Postgres.

use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use crate::child::{ensure_crashed_at, run_to_completion, spawn, wait};
use crate::support::*;

const INPUT: &str = "CREATE TABLE offers (
    restaurant_id TEXT NOT NULL,
    adv_campaign_id TEXT NOT NULL,
    tags TEXT[] NOT NULL,
    address STRUCT<city TEXT, floors SMALLINT[]>,
    CONSTRAINT few_tags CHECK (cardinality(tags) <= 3)
)";

const STEP: &str = "SELECT o.adv_campaign_id, s.client_id, o.tags, o.address, o.address['city'] AS city,
       CAST(cardinality(o.tags) AS BIGINT) AS tag_count, o.address['floors'] AS floors
FROM offers o JOIN subscribers s ON s.restaurant_id = o.restaurant_id
WHERE array_has(o.tags, 'vegan')";

const TABLE: &str = "CREATE TABLE offer_rows (adv_campaign_id text NOT NULL, client_id text NOT NULL,
    tags text[], address jsonb, city text, tag_count bigint, floors int4[])";

/// The job folder: the seed's subscribers query, the declaration above, one
/// step, the output into `offer_rows`.
fn folder() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(repo_path("sql/subscribers.sql"), dir.path().join("subscribers.sql"))?;
    std::fs::write(dir.path().join("input.sql"), INPUT)?;
    std::fs::write(dir.path().join("10_offers.sql"), STEP)?;
    std::fs::write(
        dir.path().join("job.toml"),
        "[sink.kafka]\nkey = \"client_id\"\n[sink.postgres]\ntable = \"offer_rows\"\n",
    )?;
    Ok(dir)
}

/// `(adv_campaign_id, tags, address, city, tag_count, floors)`, as text.
type Row = (String, String, Option<String>, Option<String>, i64, Option<String>);

fn offer(id: &str, tags: Value, address: Value) -> Value {
    json!({"restaurant_id": "r1", "adv_campaign_id": id, "tags": tags, "address": address})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_and_structs_reach_both_sinks_exactly_once_across_a_crash() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.client.batch_execute(TABLE).await?;
    job.db.add_subscribers("r1", &["c1"]).await?;
    let dir = folder()?;
    let messages = [
        offer("a1", json!(["vegan", "halal"]), json!({"city": "Kazan", "floors": [1, 2]})),
        offer("a2", json!(["vegan", null]), Value::Null),
        offer("a3", json!(["vegan"]), json!({"city": "Oslo", "floors": []})),
        offer("meat", json!(["meat"]), json!({"city": "Kazan"})),
        offer("bad-tag", json!(["vegan", 5]), Value::Null),
        offer("many", json!(["vegan", "a", "b", "c"]), Value::Null),
    ];
    job.kafka.produce(&job.input, 0, &messages)?;
    let extra = ["--sql-dir", dir.path().to_str().unwrap_or_default()];
    let mut crashed = extra.to_vec();
    crashed.extend(["--trigger", "available-now"]);
    let status = wait(&mut spawn(&job, &crashed, Some("after-pg-commit@1"))?, Duration::from_secs(60))?;
    ensure_crashed_at(&job, status, "after-pg-commit", 0)?;
    run_to_completion(&job, &extra)?;

    let got = postgres_rows(&job).await?;
    let kafka = kafka_values(&job).await?;
    for (row, value) in got.iter().zip(&kafka) {
        let postgres: Value = row.2.as_deref().map_or(Ok(Value::Null), serde_json::from_str)?;
        ensure!(postgres == value["address"], "the sinks agree on the struct: {postgres} vs {}", value["address"]);
    }
    let letters = job.kafka.read_committed(&job.dead_letters)?;
    ensure!(letters.len() == 2, "tags[1] not a string, and too many tags: {letters:?}");
    Ok(())
}

/// The rows of `offer_rows`, asserted to be each kept offer once.
async fn postgres_rows(job: &Job) -> Result<Vec<Row>> {
    let rows = job
        .db
        .client
        .query(
            "SELECT adv_campaign_id, tags::text, address::text, city, tag_count, floors::text
               FROM offer_rows ORDER BY 1",
            &[],
        )
        .await?;
    let got: Vec<Row> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        got,
        [
            (
                "a1".into(),
                "{vegan,halal}".into(),
                s(r#"{"city": "Kazan", "floors": [1, 2]}"#),
                s("Kazan"),
                2,
                s("{1,2}")
            ),
            ("a2".into(), "{vegan,NULL}".into(), None, None, 2, None),
            ("a3".into(), "{vegan}".into(), s(r#"{"city": "Oslo", "floors": []}"#), s("Oslo"), 1, s("{}")),
        ],
        "Postgres: each row once, arrays as arrays, the struct as jsonb"
    );
    Ok(got)
}

/// The output topic's values, asserted to be the same rows once each.
async fn kafka_values(job: &Job) -> Result<Vec<Value>> {
    crate::exactly_once::settle_output(job).await?;
    let mut kafka = job.output_messages()?;
    kafka.sort_by(|a, b| a.1["adv_campaign_id"].as_str().cmp(&b.1["adv_campaign_id"].as_str()));
    let values: Vec<&Value> = kafka.iter().map(|(_, v)| v).collect();
    assert_eq!(
        values,
        [
            &json!({"adv_campaign_id": "a1", "client_id": "c1", "tags": ["vegan", "halal"],
                    "address": {"city": "Kazan", "floors": [1, 2]}, "city": "Kazan", "tag_count": 2, "floors": [1, 2]}),
            &json!({"adv_campaign_id": "a2", "client_id": "c1", "tags": ["vegan", null], "tag_count": 2}),
            &json!({"adv_campaign_id": "a3", "client_id": "c1", "tags": ["vegan"],
                    "address": {"city": "Oslo", "floors": []}, "city": "Oslo", "tag_count": 1, "floors": []}),
        ],
        "Kafka: the same rows once, arrays and objects as JSON (a NULL column left out)"
    );
    Ok(kafka.into_iter().map(|(_, v)| v).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_column_of_another_element_type_is_refused_at_start() -> Result<()> {
    let job = Job::new(1).await?;
    job.db
        .client
        .batch_execute(&TABLE.replace("tags text[]", "tags int4[]").replace("address jsonb", "address text"))
        .await?;
    let dir = folder()?;
    let err = match job.run_available_now(&["--sql-dir", dir.path().to_str().unwrap_or_default()]).await {
        Ok(summary) => panic!("expected a start error, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    for problem in [
        "column tags: the last step gives text[], which cannot be written to integer[]",
        "column address: the last step gives a struct, which cannot be written to text",
    ] {
        assert!(err.contains(problem), "{problem}\nin: {err}");
    }
    assert!(job.output_messages()?.is_empty(), "nothing written to Kafka");
    Ok(())
}
