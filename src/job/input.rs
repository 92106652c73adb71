//! `input.sql`: the input's declaration, one `CREATE TABLE`, parsed with the
//! SQL parser DataFusion uses. Column names and types, `NOT NULL`,
//! `DEFAULT` (a constant, for an absent field) and `CHECK` constraints
//! (named or not, on a column or the table). Everything else is refused at
//! its line and column, naming what is accepted.

use std::path::Path;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    self, ColumnOption, CreateTableOptions, Expr, Spanned, Statement, TableConstraint, TimezoneInfo, UnaryOperator,
    Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Location;

use crate::error::{Error, Result};

/// The time zone of a declared `TIMESTAMPTZ` column: UTC as an offset (an
/// offset needs no time-zone database).
pub const UTC: &str = "+00:00";

/// The types an input column may have, and the JSON each accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// `TEXT`, `VARCHAR`, `STRING`: a JSON string without NUL.
    Text,
    /// `SMALLINT`, `INTEGER`, `BIGINT` (and `INT2/4/8`): a JSON integer in
    /// range, of this many bits.
    Int(u8),
    /// `REAL` (32 bits), `DOUBLE PRECISION` (64): a JSON number.
    Float(u8),
    /// `BOOLEAN`: `true` or `false`.
    Bool,
    /// `TIMESTAMPTZ`: an RFC 3339 string, or an integer of epoch seconds.
    TimestampTz,
    /// `T[]` or `ARRAY<T>`: a JSON array whose elements are `T` or null.
    List(Box<ColumnType>),
    /// `STRUCT<name T, ...>`: a JSON object with these fields, each nullable
    /// (an absent one is NULL).
    Struct(Vec<(String, ColumnType)>),
}

/// What `input.sql` accepts, for the refusal of anything else.
const ACCEPTED_TYPES: &str =
    "TEXT, VARCHAR, SMALLINT, INTEGER, BIGINT, REAL, DOUBLE PRECISION, BOOLEAN, TIMESTAMPTZ, T[], STRUCT<name T, ...>";

/// How deep arrays and structs may nest in a declaration.
const MAX_NESTING: usize = 8;

impl ColumnType {
    /// The Arrow type of the decoded column.
    pub fn arrow(&self) -> DataType {
        match self {
            ColumnType::Text => DataType::Utf8,
            ColumnType::Int(16) => DataType::Int16,
            ColumnType::Int(32) => DataType::Int32,
            ColumnType::Int(_) => DataType::Int64,
            ColumnType::Float(32) => DataType::Float32,
            ColumnType::Float(_) => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            ColumnType::List(element) => DataType::new_list(element.arrow(), true),
            ColumnType::Struct(fields) => DataType::Struct(
                fields.iter().map(|(name, ty)| Field::new(name, ty.arrow(), true)).collect::<Vec<_>>().into(),
            ),
        }
    }

    /// The JSON a value of this type is, for refusals ("should be ...").
    pub fn wanted(&self) -> &'static str {
        match self {
            ColumnType::Text => "a string",
            ColumnType::Int(_) => "an integer",
            ColumnType::Float(_) => "a number",
            ColumnType::Bool => "a boolean",
            ColumnType::TimestampTz => "an RFC 3339 timestamp string or an integer of epoch seconds",
            ColumnType::List(_) => "an array",
            ColumnType::Struct(_) => "an object",
        }
    }

    /// Whether values of this type are arrays or objects.
    pub fn is_nested(&self) -> bool {
        matches!(self, ColumnType::List(_) | ColumnType::Struct(_))
    }

    /// The type `ty` declares, `depth` levels inside arrays and structs, or
    /// why none.
    fn from_sql(ty: &ast::DataType, depth: usize) -> std::result::Result<ColumnType, String> {
        use ast::{ArrayElemTypeDef as E, DataType as D};
        if depth > MAX_NESTING {
            return Err(format!("arrays and structs nest at most {MAX_NESTING} deep"));
        }
        let nested = |inner: &ast::DataType| {
            match ColumnType::from_sql(inner, depth + 1)? {
            ColumnType::TimestampTz => Err(format!(
                "type {ty}: TIMESTAMPTZ inside an array or struct is not supported; declare it TEXT and convert it in a step (to_timestamp)"
            )),
            inner => Ok(inner),
        }
        };
        match ty {
            D::Array(E::SquareBracket(inner, None) | E::AngleBracket(inner)) => {
                return Ok(ColumnType::List(Box::new(nested(inner)?)))
            }
            D::Struct(fields, _) => {
                let mut declared: Vec<(String, ColumnType)> = Vec::new();
                for field in fields {
                    let Some(name) = field.field_name.as_ref().map(normalize) else {
                        return Err(format!("type {ty}: every struct field needs a name (STRUCT<city TEXT>)"));
                    };
                    if declared.iter().any(|(n, _)| *n == name) {
                        return Err(format!("type {ty}: field {name} is declared twice"));
                    }
                    declared.push((name, nested(&field.field_type)?));
                }
                if declared.is_empty() || declared.len() > 64 {
                    return Err(format!("type {ty}: a struct has 1 to 64 fields"));
                }
                return Ok(ColumnType::Struct(declared));
            }
            _ => {}
        }
        ColumnType::scalar(ty).ok_or_else(|| format!("type {ty} is not supported; use one of {ACCEPTED_TYPES}"))
    }

    fn scalar(ty: &ast::DataType) -> Option<ColumnType> {
        use ast::DataType as D;
        Some(match ty {
            D::Text | D::String(None) | D::Varchar(None) | D::CharacterVarying(None) | D::CharVarying(None) => {
                ColumnType::Text
            }
            D::SmallInt(None) | D::Int2(None) => ColumnType::Int(16),
            D::Int(None) | D::Integer(None) | D::Int4(None) => ColumnType::Int(32),
            D::BigInt(None) | D::Int8(None) => ColumnType::Int(64),
            D::Real | D::Float4 => ColumnType::Float(32),
            D::DoublePrecision | D::Float8 | D::Double(ast::ExactNumberInfo::None) => ColumnType::Float(64),
            D::Bool | D::Boolean => ColumnType::Bool,
            D::Timestamp(None, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => ColumnType::TimestampTz,
            _ => return None,
        })
    }
}

/// One declared column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDecl {
    /// As the SQL steps see it: unquoted names in lower case, as DataFusion
    /// reads them; the JSON field has the same name.
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// The value of an absent field (an explicit `null` stays NULL).
    pub default: Option<ScalarValue>,
}

/// One `CHECK` constraint: its name, if it has one, and its expression over
/// the input's columns (compiled where the input is decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDecl {
    pub name: Option<String>,
    pub expr: Expr,
    /// `file:line:column` of the expression, for errors found later.
    pub at: String,
}

/// The input's declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDecl {
    /// The name the SQL steps read the batch under.
    pub table: String,
    pub columns: Vec<ColumnDecl>,
    pub checks: Vec<CheckDecl>,
}

impl InputDecl {
    /// Parses `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<InputDecl> {
        let statements = Parser::parse_sql(&GenericDialect {}, text).map_err(|e| parse_error(path, &e.to_string()))?;
        let [Statement::CreateTable(table)] = statements.as_slice() else {
            let message = format!("expected exactly one CREATE TABLE statement, found {}", statements.len());
            return Err(job_error(path, None, message));
        };
        refuse_extras(path, table)?;
        let name = table.name.0.last().and_then(|part| part.as_ident()).map(normalize).unwrap_or_default();
        let mut decl = InputDecl { table: name, columns: Vec::new(), checks: Vec::new() };
        for column in &table.columns {
            decl.add_column(path, column)?;
        }
        for constraint in &table.constraints {
            match constraint {
                TableConstraint::Check(check) => decl.checks.push(CheckDecl {
                    name: check.name.as_ref().map(normalize),
                    at: located(path, check.expr.span().start),
                    expr: (*check.expr).clone(),
                }),
                other => {
                    let message = format!("{other}: only CHECK constraints mean something for a stream of messages");
                    return Err(job_error(path, Some(other.span().start), message));
                }
            }
        }
        if decl.columns.is_empty() {
            return Err(job_error(path, None, "the table has no columns".into()));
        }
        Ok(decl)
    }

    fn add_column(&mut self, path: &Path, column: &ast::ColumnDef) -> Result<()> {
        let at = Some(column.name.span.start);
        let name = normalize(&column.name);
        if self.columns.iter().any(|c| c.name == name) {
            return Err(job_error(path, at, format!("column {name} is declared twice")));
        }
        let ty = ColumnType::from_sql(&column.data_type, 0).map_err(|why| {
            use ast::DataType as D;
            let hint = match &column.data_type {
                D::Varchar(Some(_)) | D::Char(_) | D::Character(_) | D::CharacterVarying(Some(_)) => {
                    format!(" (a length limit is a CHECK: CHECK (length({name}) <= 100))")
                }
                _ => String::new(),
            };
            job_error(path, at, format!("column {name}: {why}{hint}"))
        })?;
        let mut decl = ColumnDecl { name, ty, nullable: true, default: None };
        for option in &column.options {
            match &option.option {
                ColumnOption::NotNull => decl.nullable = false,
                ColumnOption::Null => {}
                ColumnOption::Default(expr) => decl.default = Some(default_value(path, &decl, expr)?),
                ColumnOption::Check(check) => self.checks.push(CheckDecl {
                    name: option.name.as_ref().or(check.name.as_ref()).map(normalize),
                    at: located(path, check.expr.span().start),
                    expr: (*check.expr).clone(),
                }),
                other => {
                    let message = format!(
                        "column {}: {other} is not supported (accepted: NOT NULL, NULL, DEFAULT, CHECK)",
                        decl.name
                    );
                    return Err(job_error(path, at, message));
                }
            }
        }
        self.columns.push(decl);
        Ok(())
    }

    /// The Arrow schema of a decoded batch, in declaration order.
    pub fn schema(&self) -> SchemaRef {
        let fields = self.columns.iter().map(|c| Field::new(&c.name, c.ty.arrow(), c.nullable || c.default.is_some()));
        std::sync::Arc::new(Schema::new(fields.collect::<Vec<_>>()))
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnDecl> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Everything of a `CREATE TABLE` beyond its name, columns and constraints
/// is refused (options belong in `job.toml`).
fn refuse_extras(path: &Path, table: &ast::CreateTable) -> Result<()> {
    let at = table.name.span().start;
    if table.table_options != CreateTableOptions::None {
        return Err(job_error(path, Some(at), "table options (WITH ...) go in job.toml, not in input.sql".into()));
    }
    if table.query.is_some() || table.like.is_some() {
        return Err(job_error(path, Some(at), "declare the columns one by one (no AS SELECT, no LIKE)".into()));
    }
    if table.temporary || table.external || table.or_replace {
        return Err(job_error(path, Some(at), "plain CREATE TABLE only (no TEMPORARY, EXTERNAL, OR REPLACE)".into()));
    }
    Ok(())
}

/// A `DEFAULT`: a constant of the column's type.
fn default_value(path: &Path, column: &ColumnDecl, expr: &Expr) -> Result<ScalarValue> {
    let at = Some(expr.span().start).filter(|l| l.line > 0);
    let fail = |why: &str| job_error(path, at, format!("column {}: DEFAULT {expr}: {why}", column.name));
    let (sign, inner) = match expr {
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => (-1, expr.as_ref()),
        other => (1, other),
    };
    let Expr::Value(value) = inner else {
        return Err(fail("a default must be a constant (a number, a 'string', true or false)"));
    };
    let integer = |n: &str| n.parse::<i64>().ok().and_then(|n| n.checked_mul(sign));
    let out_of_range = || fail("out of the column's range");
    if column.ty.is_nested() {
        return Err(fail("an array or struct column takes no DEFAULT (an absent one is NULL)"));
    }
    Ok(match (&value.value, &column.ty, sign) {
        (Value::Number(n, _), &ColumnType::Int(bits), _) => {
            let n = integer(n).ok_or_else(|| fail("not an integer in range"))?;
            match bits {
                16 => ScalarValue::Int16(Some(i16::try_from(n).map_err(|_| out_of_range())?)),
                32 => ScalarValue::Int32(Some(i32::try_from(n).map_err(|_| out_of_range())?)),
                _ => ScalarValue::Int64(Some(n)),
            }
        }
        (Value::Number(n, _), ColumnType::TimestampTz, _) => {
            let micros = integer(n).and_then(|s| s.checked_mul(1_000_000)).ok_or_else(out_of_range)?;
            ScalarValue::TimestampMicrosecond(Some(micros), Some(UTC.into()))
        }
        (Value::Number(n, _), &ColumnType::Float(bits), _) => {
            let n = n.parse::<f64>().map_err(|_| fail("not a number"))? * sign as f64;
            match bits {
                32 => ScalarValue::Float32(Some(n as f32)),
                _ => ScalarValue::Float64(Some(n)),
            }
        }
        (Value::SingleQuotedString(s), ColumnType::Text, 1) => ScalarValue::Utf8(Some(s.clone())),
        (Value::SingleQuotedString(s), ColumnType::TimestampTz, 1) => {
            let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| fail(&format!("not RFC 3339: {e}")))?;
            ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some(UTC.into()))
        }
        (Value::Boolean(b), ColumnType::Bool, 1) => ScalarValue::Boolean(Some(*b)),
        (Value::Null, _, _) => return Err(fail("an absent nullable field is NULL already; drop the DEFAULT")),
        _ => return Err(fail(&format!("not a constant of the column's type ({})", column.ty.wanted()))),
    })
}

/// Unquoted names in lower case, as DataFusion reads them; quoted ones as
/// written.
fn normalize(ident: &ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// `file:line:column`, or `file` where the place is unknown.
pub(super) fn located(path: &Path, at: Location) -> String {
    match at.line {
        0 => path.display().to_string(),
        line => format!("{}:{line}:{}", path.display(), at.column),
    }
}

pub(super) fn job_error(path: &Path, at: Option<Location>, message: String) -> Error {
    let at = at.map_or_else(|| path.display().to_string(), |at| located(path, at));
    Error::Job { at, message }
}

/// The parser's error names its place only in its text (`... at Line: 3,
/// Column: 11`): moved to the front, as `file:3:11`.
fn parse_error(path: &Path, text: &str) -> Error {
    let text = text.strip_prefix("sql parser error: ").unwrap_or(text);
    let place = text.rsplit_once(" at Line: ").and_then(|(message, place)| {
        let (line, column) = place.split_once(", Column: ")?;
        Some((message, line.trim().parse().ok()?, column.trim().parse().ok()?))
    });
    match place {
        Some((message, line, column)) => job_error(path, Some(Location { line, column }), message.to_string()),
        None => job_error(path, None, text.to_string()),
    }
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
