//! The cached subscribers as the SQL files scan them: a table that reads
//! only the restaurants a batch's join asks for, so a small batch costs the
//! same against 10k or 10M cached rows.
//!
//! DataFusion's hash join builds its table from the smaller side (a batch's
//! campaigns) and then pushes a filter down to the other side's scan: once
//! the build side is complete, the filter holds `restaurant_id IN (...)`
//! with the batch's restaurants (for up to 128 KiB of keys). A plain
//! in-memory table ignores it, and the join probes every cached row, every
//! batch. This scan reads the filter when it is first polled (after the
//! build) and returns only the rows of those restaurants, found through an
//! index built once per loaded version (rows arrive grouped by restaurant:
//! `sql/subscribers.sql` orders them). The join still checks every row it
//! gets, so the scan may return more than asked and never decides a result;
//! with no usable filter, or rows not grouped, it returns the whole table.
//!
//! The cache keeps `restaurant_id` as a dictionary (each restaurant's id
//! once); the SQL sees it as plain text, the join key's type on both sides
//! (DataFusion would otherwise cast one side, every batch). The scan turns
//! the rows it returns into plain text chunk by chunk, so at most one
//! chunk's ids exist as text at a time.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::expressions::{Column, InListExpr, Literal};
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::{split_conjunction, EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use futures::StreamExt;

use crate::schema::text::Text;

/// The join key the index is built on.
const KEY: &str = "restaurant_id";

/// Rows per chunk the scan returns.
const CHUNK_ROWS: usize = 8192;

/// One version of the subscribers table with its restaurant index; cloning
/// shares both.
#[derive(Debug, Clone)]
pub struct SubscribersTable {
    inner: Arc<Indexed>,
}

#[derive(Debug)]
struct Indexed {
    batch: RecordBatch,
    /// The batch's schema as the SQL sees it: the key as plain text.
    schema: SchemaRef,
    /// `None` when the rows are not grouped by restaurant.
    index: Option<RestaurantIndex>,
}

/// Where each restaurant's rows are: restaurant `g` holds rows
/// `starts[g]..starts[g + 1]`; `groups` maps a key's hash to `g`.
#[derive(Debug)]
struct RestaurantIndex {
    starts: Vec<u32>,
    groups: HashMap<u64, u32>,
    hasher: RandomState,
}

impl SubscribersTable {
    /// Indexes `batch` (the cache's form, `restaurant_id` a dictionary or
    /// text) by its `restaurant_id` column.
    pub fn new(batch: RecordBatch) -> Self {
        let index = RestaurantIndex::build(&batch);
        let stored = batch.schema();
        let fields = stored.fields().iter().map(|f| match f.name().as_str() {
            KEY => Arc::new(Field::new(KEY, DataType::Utf8, f.is_nullable())),
            _ => f.clone(),
        });
        let schema = Arc::new(Schema::new(fields.collect::<Vec<_>>()));
        SubscribersTable { inner: Arc::new(Indexed { batch, schema, index }) }
    }

    /// The rows in the cache's form (the SQL sees `restaurant_id` as text).
    pub fn batch(&self) -> &RecordBatch {
        &self.inner.batch
    }

    /// Whether small batches read only their restaurants' rows.
    pub fn is_indexed(&self) -> bool {
        self.inner.index.is_some()
    }
}

impl Indexed {
    /// The row numbers of `keys`' restaurants, in table order; `None` means
    /// every row (no index).
    fn rows_of<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Option<UInt32Array> {
        let index = self.index.as_ref()?;
        let restaurants = Text::of(self.batch.column_by_name(KEY)?.as_ref())?;
        let mut groups: Vec<u32> = keys.filter_map(|k| index.group_of(k, restaurants)).collect();
        groups.sort_unstable();
        groups.dedup();
        let rows = groups.iter().flat_map(|&g| index.starts[g as usize]..index.starts[g as usize + 1]);
        Some(rows.collect())
    }
}

impl RestaurantIndex {
    /// One pass over the key column; `None` if a restaurant's rows are not
    /// together, the column is not text, or two keys share a hash.
    fn build(batch: &RecordBatch) -> Option<Self> {
        let restaurants = Text::of(batch.column_by_name(KEY)?.as_ref())?;
        let n = u32::try_from(batch.num_rows()).ok()?;
        let hasher = RandomState::new();
        let (mut starts, mut groups) = (Vec::new(), HashMap::new());
        for row in 0..n as usize {
            let key = restaurants.value(row);
            if row > 0 && restaurants.value(row - 1) == key {
                continue;
            }
            if groups.insert(hasher.hash_one(key), starts.len() as u32).is_some() {
                return None;
            }
            starts.push(row as u32);
        }
        starts.push(n);
        Some(RestaurantIndex { starts, groups, hasher })
    }

    fn group_of(&self, key: &str, restaurants: Text<'_>) -> Option<u32> {
        let group = *self.groups.get(&self.hasher.hash_one(key))?;
        (restaurants.value(self.starts[group as usize] as usize) == key).then_some(group)
    }
}

#[async_trait::async_trait]
impl TableProvider for SubscribersTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection = projection.cloned().unwrap_or_else(|| (0..self.inner.batch.num_columns()).collect());
        let schema = Arc::new(self.inner.schema.project(&projection)?);
        let scan = Scan { table: self.inner.clone(), projection, schema, filters: Vec::new() };
        Ok(DataSourceExec::from_data_source(scan))
    }
}

/// One scan of a version: its projection and the filters pushed to it.
#[derive(Debug, Clone)]
struct Scan {
    table: Arc<Indexed>,
    projection: Vec<usize>,
    schema: SchemaRef,
    filters: Vec<Arc<dyn PhysicalExpr>>,
}

impl Scan {
    /// The rows to return, decided from the filters as they stand now, as
    /// the cache stores them.
    fn read(&self) -> DfResult<RecordBatch> {
        let batch = self.table.batch.project(&self.projection)?;
        let keys = self.filters.iter().find_map(|f| restaurant_keys(f, &self.schema));
        match keys.and_then(|keys| self.table.rows_of(keys.iter().map(String::as_str))) {
            Some(rows) => Ok(arrow::compute::take_record_batch(&batch, &rows)?),
            None => Ok(batch),
        }
    }
}

/// The restaurants of a `restaurant_id IN (...)` conjunct of `filter`'s
/// current value, if it has one.
fn restaurant_keys(filter: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<Vec<String>> {
    let now = snapshot_physical_expr(filter.clone()).ok()?;
    split_conjunction(&now).into_iter().find_map(|conjunct| {
        let in_list = conjunct.downcast_ref::<InListExpr>().filter(|l| !l.negated())?;
        let column = in_list.expr().downcast_ref::<Column>()?;
        if schema.fields().get(column.index()).map(|f| f.name().as_str()) != Some(KEY) {
            return None;
        }
        in_list
            .list()
            .iter()
            .map(|item| match item.downcast_ref::<Literal>()?.value() {
                ScalarValue::Utf8(Some(k)) | ScalarValue::LargeUtf8(Some(k)) | ScalarValue::Utf8View(Some(k)) => {
                    Some(k.clone())
                }
                _ => None,
            })
            .collect()
    })
}

/// `rows` in chunks of [`CHUNK_ROWS`], each column cast to `schema`'s type
/// (the key's dictionary to text) when the chunk is taken.
fn as_sql_sees_it(rows: RecordBatch, schema: SchemaRef) -> impl Iterator<Item = DfResult<RecordBatch>> + Send {
    (0..rows.num_rows()).step_by(CHUNK_ROWS).map(move |at| {
        let chunk = rows.slice(at, CHUNK_ROWS.min(rows.num_rows() - at));
        Ok(crate::schema::cast_to(&chunk, schema.clone())?)
    })
}

impl DataSource for Scan {
    fn open(&self, _partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        // Read when first polled: the join polls this side after its build
        // side is complete, when the filter holds the batch's restaurants.
        let (scan, schema) = (self.clone(), self.schema.clone());
        let chunks = futures::stream::once(async move { scan.read() }).flat_map(move |rows| {
            let chunks: Box<dyn Iterator<Item = DfResult<RecordBatch>> + Send> = match rows {
                Ok(rows) => Box::new(as_sql_sees_it(rows, schema.clone())),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            futures::stream::iter(chunks)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), chunks)))
    }

    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let indexed = self.table.index.is_some();
        write!(
            f,
            "subscribers: rows={}, indexed={indexed}, filters={}",
            self.table.batch.num_rows(),
            self.filters.len()
        )
    }

    fn output_partitioning(&self) -> Partitioning {
        Partitioning::UnknownPartitioning(1)
    }

    fn eq_properties(&self) -> EquivalenceProperties {
        EquivalenceProperties::new(self.schema.clone())
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema);
        stats.num_rows = Precision::Exact(self.table.batch.num_rows());
        stats.total_byte_size = Precision::Inexact(self.table.batch.get_array_memory_size());
        Ok(Arc::new(stats))
    }

    fn with_fetch(&self, _limit: Option<usize>) -> Option<Arc<dyn DataSource>> {
        None
    }

    fn fetch(&self) -> Option<usize> {
        None
    }

    fn try_swapping_with_projection(&self, _projection: &ProjectionExprs) -> DfResult<Option<Arc<dyn DataSource>>> {
        Ok(None)
    }

    /// Keeps the filters as hints: every one stays with the node that pushed
    /// it (`PushedDown::No`), so the scan never decides a result.
    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> DfResult<FilterPushdownPropagation<Arc<dyn DataSource>>> {
        let kept = vec![PushedDown::No; filters.len()];
        let mut scan = self.clone();
        scan.filters.extend(filters);
        Ok(FilterPushdownPropagation::with_parent_pushdown_result(kept).with_updated_node(Arc::new(scan)))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for filter in &self.filters {
            if f(filter)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscribers::Subscribers;
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::prelude::SessionContext;

    fn table(rows: &[(&str, &str)]) -> SubscribersTable {
        let subs = Subscribers::from_rows(
            rows.iter().map(|r| r.0.to_string()).collect(),
            rows.iter().map(|r| r.1.to_string()).collect(),
        )
        .unwrap();
        subs.table
    }

    fn scan_with(table: &SubscribersTable, keys: &[&str]) -> RecordBatch {
        let schema = table.batch().schema();
        let list = keys.iter().map(|k| lit(*k)).collect();
        let filter = InListExpr::try_new(col(KEY, &schema).unwrap(), list, false, &schema).unwrap();
        let scan = Scan {
            table: table.inner.clone(),
            projection: (0..schema.fields().len()).collect(),
            schema: schema.clone(),
            filters: vec![Arc::new(filter)],
        };
        scan.read().unwrap()
    }

    fn clients(batch: &RecordBatch) -> Vec<String> {
        let text = crate::schema::text::Text::of(batch.column(0).as_ref()).unwrap();
        (0..batch.num_rows()).map(|i| text.value(i).to_string()).collect()
    }

    #[test]
    fn a_key_filter_reads_only_those_restaurants_rows() {
        let t = table(&[("c1", "r1"), ("c2", "r1"), ("c3", "r2"), ("c4", "r3"), ("c5", "r3")]);
        assert!(t.is_indexed());
        assert_eq!(clients(&scan_with(&t, &["r3", "r1", "nope"])), ["c1", "c2", "c4", "c5"]);
        assert_eq!(scan_with(&t, &["nope"]).num_rows(), 0);
    }

    #[test]
    fn rows_not_grouped_by_restaurant_are_read_whole() {
        let t = table(&[("c1", "r1"), ("c2", "r2"), ("c3", "r1")]);
        assert!(!t.is_indexed());
        assert_eq!(clients(&scan_with(&t, &["r2"])), ["c1", "c2", "c3"]);
    }

    /// The join's filter reaches the scan, and the join's result is the same
    /// with the index as with a whole scan. (The subscribers are the larger
    /// side, as in production, so the join builds on the campaigns.)
    #[tokio::test]
    async fn the_join_pushes_its_keys_to_the_scan_and_gets_the_same_rows() {
        let names: Vec<(String, String)> = (0..1000).map(|i| (format!("c{i}"), format!("r{}", i / 10))).collect();
        let rows: Vec<(&str, &str)> = names.iter().map(|(c, r)| (c.as_str(), r.as_str())).collect();
        let grouped = table(&rows);
        let interleaved: Vec<(&str, &str)> =
            rows.iter().step_by(2).chain(rows.iter().skip(1).step_by(2)).copied().collect();
        let ungrouped = table(&interleaved);
        assert!(grouped.is_indexed() && !ungrouped.is_indexed());
        let mut results = Vec::new();
        for t in [grouped, ungrouped] {
            let ctx = SessionContext::new_with_config(crate::transform::session_config());
            ctx.register_table("subscribers", Arc::new(t)).unwrap();
            ctx.sql("CREATE TABLE campaigns AS VALUES ('r1', 'a'), ('r3', 'b')").await.unwrap();
            let sql = "SELECT s.client_id, c.column2 FROM campaigns c \
                       JOIN subscribers s ON s.restaurant_id = c.column1 ORDER BY 1";
            let plan = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap().collect().await.unwrap();
            let plan = arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
            assert!(plan.contains("filters=1"), "the join's filter reaches the scan: {plan}");
            let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            results.push(arrow::util::pretty::pretty_format_batches(&out).unwrap().to_string());
        }
        assert!(results[0].contains("| c19 ") && !results[0].contains("| c20 "), "{}", results[0]);
        assert_eq!(results[0].lines().count(), 20 + 4, "10 subscribers of each of r1 and r3, in a table");
        assert_eq!(results[0], results[1]);
    }
}
