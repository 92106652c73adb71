//! The SQL files in `sql/`, run by DataFusion on the fixtures in
//! `tests/fixtures/transform/*.json` (campaigns, subscribers, `now`, expected
//! output), without Kafka or Postgres.

use anyhow::{Context, Result};
use arrow::json::LineDelimitedWriter;
use serde_json::Value;
use sparklet::source::decode::{decode, RawBatch};
use sparklet::subscribers::Subscribers;
use sparklet::transform::SqlPipeline;

use crate::support::repo_path;

async fn run_fixture(pipeline: &SqlPipeline, fixture: &Value) -> Result<Vec<Value>> {
    let mut raw = RawBatch::default();
    for (i, c) in fixture["campaigns"].as_array().context("campaigns")?.iter().enumerate() {
        raw.push(0, i as i64, None, Some(c.to_string().as_bytes()));
    }
    let campaigns = decode(&raw, pipeline.input(), &Default::default())?;
    assert!(campaigns.bad.is_empty(), "{:?}", campaigns.bad);
    let pairs = fixture["subscribers"].as_array().context("subscribers")?;
    let subs = Subscribers::from_rows(
        pairs.iter().map(|p| p[0].as_str().unwrap_or_default().to_string()).collect(),
        pairs.iter().map(|p| p[1].as_str().unwrap_or_default().to_string()).collect(),
    )?;
    let now = fixture["now"].as_i64().context("now")?;
    let batches = pipeline.run(campaigns.batch, &subs, now, 0).await?;
    let mut json = Vec::new();
    let mut writer = LineDelimitedWriter::new(&mut json);
    for b in &batches {
        writer.write(b)?;
    }
    writer.finish()?;
    drop(writer);
    let mut rows: Vec<Value> =
        json.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(serde_json::from_slice).collect::<Result<_, _>>()?;
    rows.sort_by_key(|r| (r["adv_campaign_id"].to_string(), r["client_id"].to_string()));
    Ok(rows)
}

#[tokio::test]
async fn sql_files_give_the_expected_output_for_every_fixture() -> Result<()> {
    let pipeline = SqlPipeline::load(&repo_path("sql"))?;
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_path("tests/fixtures/transform"))? {
        let path = entry?.path();
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let mut expected: Vec<Value> = fixture["expected"].as_array().context("expected")?.clone();
        expected.sort_by_key(|r| (r["adv_campaign_id"].to_string(), r["client_id"].to_string()));
        let actual = run_fixture(&pipeline, &fixture).await?;
        assert_eq!(actual, expected, "fixture {} ({})", path.display(), fixture["about"]);
        checked += 1;
    }
    assert!(checked >= 3, "fixtures found: {checked}");
    Ok(())
}

#[tokio::test]
async fn output_columns_are_the_last_steps_columns_in_its_order_extra_ones_included() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("10_out.sql"),
        "SELECT CAST($now AS INT) AS trigger_datetime_created, s.client_id, c.*, 'extra' AS note
         FROM campaigns c JOIN subscribers s USING (restaurant_id)",
    )?;
    let pipeline = SqlPipeline::load(dir.path())?;
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(repo_path(
        "tests/fixtures/transform/example_message_fans_out_to_subscribers.json",
    ))?)?;
    let rows = run_fixture(&pipeline, &fixture).await?;
    let keys: Vec<&String> = rows[0].as_object().context("row")?.keys().collect();
    let mut expected = vec!["trigger_datetime_created", "client_id"];
    expected.extend(sparklet::schema::CAMPAIGN_FIELDS.iter().map(|(n, _)| *n));
    expected.push("note");
    assert_eq!(keys, expected, "the query's order, and the extra column is kept");
    assert_eq!(rows[0]["note"], "extra");
    Ok(())
}
