//! The job's input declaration compiled for one query: what [`super::validate`]
//! checks per message, the schema arrow-json decodes, and the `CHECK`
//! constraints, planned once with DataFusion and evaluated per decoded chunk
//! ([`super::finish`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::ExprSchemable;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::ExprWithAlias;

use crate::error::{Error, Result};
use crate::job::{CheckDecl, ColumnType, Job, UnknownFields};
use crate::schema::Reason;

/// Most columns with a `DEFAULT` (one bit each per message).
pub(crate) const MAX_DEFAULTS: usize = 64;

/// One declared column, as validation sees it.
#[derive(Debug)]
pub(crate) struct ColumnPlan {
    pub(crate) name: String,
    pub(crate) ty: ColumnType,
    pub(crate) nullable: bool,
    /// Its bit in the absent mask, if it has a default.
    pub(crate) default_bit: Option<u8>,
}

/// A compiled `CHECK`.
pub(crate) struct Check {
    pub(crate) reason: Reason,
    /// `CHECK name (expr)`, for the default sentence.
    pub(crate) text: String,
    pub(crate) expr: Arc<dyn PhysicalExpr>,
    /// The columns it reads, in declaration order (named in the sentence).
    pub(crate) columns: Vec<usize>,
    /// `job.toml`'s sentence, `{column}` replaced by the value.
    pub(crate) template: Option<String>,
}

/// The compiled declaration.
pub struct Input {
    pub(crate) columns: Vec<ColumnPlan>,
    by_name: HashMap<String, usize>,
    pub(crate) unknown: UnknownFields,
    /// The decoded batch's schema (what the SQL steps see).
    schema: SchemaRef,
    /// What arrow-json decodes: timestamps as text, converted after.
    pub(crate) decode_schema: SchemaRef,
    pub(crate) defaults: Vec<(usize, ScalarValue)>,
    pub(crate) checks: Vec<Check>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").field("schema", &self.schema).field("checks", &self.checks.len()).finish()
    }
}

impl Input {
    /// Compiles `job`'s declaration; a `CHECK` that does not plan is refused
    /// at its place in `input.sql`.
    pub fn new(job: &Job) -> Result<Input> {
        let decl = &job.input;
        let schema = decl.schema();
        let mut columns = Vec::with_capacity(decl.columns.len());
        let mut defaults = Vec::new();
        for (i, column) in decl.columns.iter().enumerate() {
            let default_bit = match &column.default {
                Some(value) if defaults.len() < MAX_DEFAULTS => {
                    defaults.push((i, value.clone()));
                    Some((defaults.len() - 1) as u8)
                }
                Some(_) => return Err(job_error(&job.input.checks, format!("more than {MAX_DEFAULTS} DEFAULTs"))),
                None => None,
            };
            columns.push(ColumnPlan {
                name: column.name.clone(),
                ty: column.ty.clone(),
                nullable: column.nullable,
                default_bit,
            });
        }
        let decode_fields = schema.fields().iter().map(|f| match f.data_type() {
            DataType::Timestamp(..) => Field::new(f.name(), DataType::Utf8, f.is_nullable()),
            _ => f.as_ref().clone(),
        });
        let checks = decl.checks.iter().map(|c| compile(c, job, &schema)).collect::<Result<_>>()?;
        Ok(Input {
            by_name: columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect(),
            columns,
            unknown: job.options.input.unknown_fields,
            decode_schema: Arc::new(Schema::new(decode_fields.collect::<Vec<_>>())),
            schema,
            defaults,
            checks,
        })
    }

    /// The seed job's input (the repository's `sql/input.sql`).
    pub fn seed() -> Result<Input> {
        Input::new(&Job::seed()?)
    }

    /// The decoded batch's schema: the declared columns in order.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The index of the column called `name`.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        match self.columns.len() {
            0..=16 => self.columns.iter().position(|c| c.name == name),
            _ => self.by_name.get(name).copied(),
        }
    }

    /// Whether decoded chunks need more than arrow-json's decoding.
    pub(crate) fn needs_finishing(&self) -> bool {
        !self.defaults.is_empty() || !self.checks.is_empty() || self.decode_schema != self.schema
    }
}

fn job_error(checks: &[CheckDecl], message: String) -> Error {
    let at = checks.first().map_or_else(|| "input.sql".to_string(), |c| c.at.clone());
    Error::Job { at, message }
}

/// Plans one `CHECK` against the declared columns.
fn compile(check: &CheckDecl, job: &Job, schema: &SchemaRef) -> Result<Check> {
    let fail = |message: String| Error::Job { at: check.at.clone(), message };
    let reason = match &check.name {
        Some(name) => Reason::Check(reason_code(name).map_err(fail)?),
        None => Reason::Check(Reason::CHECK_FAILED),
    };
    let text = match &check.name {
        Some(name) => format!("CHECK {name} ({})", check.expr),
        None => format!("CHECK ({})", check.expr),
    };
    let state = SessionContext::new().state();
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| fail(e.to_string()))?;
    let sql = ExprWithAlias { expr: check.expr.clone(), alias: None };
    let logical = state.create_logical_expr_from_sql_expr(sql, &df_schema).map_err(|e| fail(format!("{text}: {e}")))?;
    if logical.is_volatile() {
        return Err(fail(format!("{text}: must give the same answer for the same message (no random(), now())")));
    }
    match logical.get_type(&df_schema) {
        Ok(DataType::Boolean) => {}
        Ok(other) => return Err(fail(format!("{text}: is {other}, not a boolean"))),
        Err(e) => return Err(fail(format!("{text}: {e}"))),
    }
    let mut columns: Vec<usize> = logical
        .column_refs()
        .iter()
        .filter_map(|c| schema.index_of(c.name()).ok())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    columns.sort_unstable();
    let expr = state.create_physical_expr(logical, &df_schema).map_err(|e| fail(format!("{text}: {e}")))?;
    let template = check.name.as_deref().and_then(|n| job.check_message(n)).map(str::to_string);
    Ok(Check { reason, text, expr, columns, template })
}

/// A constraint's name as a reason code: `[a-z][a-z0-9_]*`, not a code of
/// sparklet's own; interned, so a code is `&'static` like the built-in ones.
fn reason_code(name: &str) -> std::result::Result<&'static str, String> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63;
    if !valid {
        return Err(format!("constraint {name}: a CHECK's name is its reason code: [a-z][a-z0-9_]*, at most 63 bytes"));
    }
    if Reason::ALL.iter().any(|r| r.code() == name) {
        return Err(format!("constraint {name}: the name is one of sparklet's own reason codes; choose another"));
    }
    static CODES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut codes = CODES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(code) = codes.get(name) {
        return Ok(code);
    }
    let code: &'static str = Box::leak(name.to_string().into_boxed_str());
    codes.insert(code);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_declaration_is_the_seed_jobs_campaign_format() {
        assert_eq!(Input::seed().unwrap().schema(), crate::schema::campaigns());
    }
}
