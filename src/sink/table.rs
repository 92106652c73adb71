//! The Postgres table the output goes to, checked in the catalog before
//! anything is read: each output column must exist, be assignable from its
//! Arrow type by binary COPY ([`Target`]), and not be generated; every
//! `NOT NULL` column without a default must be filled; an upsert key must be
//! exactly a unique index's columns. All problems are reported together.

use arrow::datatypes::{DataType, Schema};
use tokio_postgres::Client;

use super::target::Target;
use crate::error::{Error, Result};
use crate::job::PostgresSinkOptions;

/// One column of the table, as the catalog describes it.
struct Column {
    name: String,
    /// `format_type`: `character varying(20)`, `bigint`, ...
    shown: String,
    /// The base type's `typname` (a domain's base).
    base: String,
    not_null: bool,
    has_default: bool,
    /// `a`: `GENERATED ALWAYS AS IDENTITY`; `d`: `BY DEFAULT`; empty: none.
    identity: String,
    /// `s`: a stored generated column.
    generated: String,
    /// An array column's element: its base `typname` and its oid.
    element: Option<(String, u32)>,
}

/// The table's columns, in attribute order; `None` if there is no such
/// table (or view) on the search path.
async fn columns(
    client: &Client,
    table: &str,
) -> std::result::Result<Option<(String, Vec<Column>)>, tokio_postgres::Error> {
    let Some(kind) = client
        .query_opt(
            "SELECT c.relkind::text FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)",
            &[&table],
        )
        .await?
    else {
        return Ok(None);
    };
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), b.typname::text,
                    a.attnotnull, a.atthasdef, a.attidentity::text, a.attgenerated::text,
                    e.typname::text, e.oid
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
               JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END
               LEFT JOIN pg_catalog.pg_type e ON e.typarray = b.oid
              WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&table],
        )
        .await?;
    let columns = rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            shown: r.get(1),
            base: r.get(2),
            not_null: r.get(3),
            has_default: r.get(4),
            identity: r.get(5),
            generated: r.get(6),
            element: r.get::<_, Option<String>>(7).zip(r.get::<_, Option<u32>>(8)),
        })
        .collect();
    Ok(Some((kind.get(0), columns)))
}

/// The column sets of the table's unique indexes an upsert can use
/// (immediate, valid, not partial, no expressions).
async fn unique_keys(client: &Client, table: &str) -> std::result::Result<Vec<Vec<String>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT ARRAY(SELECT a.attname::text
                            FROM pg_catalog.unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) k
                            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k)
               FROM pg_catalog.pg_index i
              WHERE i.indrelid = pg_catalog.to_regclass($1) AND i.indisunique AND i.indimmediate
                AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL",
            &[&table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Checks that `table` takes `output` (and the upsert key); returns each
/// output column's [`Target`], in the output's order.
pub(crate) async fn check(
    client: &Client,
    options: &PostgresSinkOptions,
    output: &Schema,
    target: &str,
) -> Result<Vec<Target>> {
    let table = options.table.as_str();
    let pg = |e| Error::postgres(format!("reading the catalog of table {table} on {target}"), e);
    let refuse = |problems: Vec<String>| Error::PostgresTable {
        table: table.to_string(),
        target: target.to_string(),
        problems: problems.join("; "),
    };
    let Some((kind, columns)) = columns(client, table).await.map_err(pg)? else {
        return Err(refuse(vec![
            "there is no such table (create it first; the seed job's is in sql/schema.sql)".into()
        ]));
    };
    if kind != "r" && kind != "p" {
        return Err(refuse(vec![format!("it is not a table (relkind {kind}): COPY needs a table")]));
    }
    let (targets, mut problems) = output_problems(&columns, output);
    problems.extend(unfilled(&columns, output));
    if !options.upsert_key.is_empty() {
        let keys = unique_keys(client, table).await.map_err(pg)?;
        problems.extend(key_problems(&options.upsert_key, &keys, output));
    }
    match problems.is_empty() {
        true => Ok(targets),
        false => Err(refuse(problems)),
    }
}

/// Each output column's target, and what is wrong with the others.
fn output_problems(columns: &[Column], output: &Schema) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    for field in output.fields() {
        let (name, ty) = (field.name(), field.data_type());
        let Some(column) = columns.iter().find(|c| &c.name == name) else {
            problems.push(format!(
                "column {name}: the table has no such column (add it, or leave it out of the last step)"
            ));
            continue;
        };
        if column.identity == "a" || !column.generated.is_empty() {
            problems.push(format!("column {name}: the table generates it; leave it out of the last step"));
            continue;
        }
        match Target::of_column(&column.base, column.element.as_ref()).filter(|t| t.takes(ty)) {
            Some(target) => targets.push(target),
            None => problems.push(format!(
                "column {name}: the last step gives {}, which cannot be written to {} (CAST it to the column's type in the last step)",
                sql_name(ty),
                column.shown
            )),
        }
    }
    (targets, problems)
}

/// `ty` as SQL names it (what the last step's column is, for people).
fn sql_name(ty: &DataType) -> String {
    use DataType as D;
    match ty {
        t if Target::natural(t) == Some(Target::Text) => "text".into(),
        D::Int16 => "smallint".into(),
        D::Int32 => "integer".into(),
        D::Int64 => "bigint".into(),
        D::Float32 => "real".into(),
        D::Float64 => "double precision".into(),
        D::Boolean => "boolean".into(),
        D::Timestamp(_, Some(_)) => "timestamptz".into(),
        D::Timestamp(_, None) => "timestamp".into(),
        D::Date32 => "date".into(),
        D::List(item) => format!("{}[]", sql_name(item.data_type())),
        D::Struct(_) => "a struct".into(),
        other => format!("{other} (Arrow)"),
    }
}

/// The `NOT NULL` columns without a default the output leaves empty.
fn unfilled(columns: &[Column], output: &Schema) -> Vec<String> {
    columns
        .iter()
        .filter(|c| c.not_null && !c.has_default && c.identity.is_empty() && c.generated.is_empty())
        .filter(|c| output.field_with_name(&c.name).is_err())
        .map(|c| format!("column {}: NOT NULL without a default, and the last step does not fill it", c.name))
        .collect()
}

/// Whether `key` is exactly one of `unique`'s column sets, and in the
/// output.
fn key_problems(key: &[String], unique: &[Vec<String>], output: &Schema) -> Vec<String> {
    let mut problems: Vec<String> = key
        .iter()
        .filter(|k| output.field_with_name(k).is_err())
        .map(|k| format!("upsert key column {k}: the last step has no such column"))
        .collect();
    let mut wanted: Vec<&String> = key.iter().collect();
    wanted.sort();
    let found = unique.iter().any(|index| {
        let mut have: Vec<&String> = index.iter().collect();
        have.sort();
        have == wanted
    });
    if !found {
        problems.push(format!(
            "upsert key ({}): no unique index or primary key of the table has exactly these columns (ON CONFLICT needs one)",
            key.join(", ")
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upsert_key_must_be_exactly_a_unique_indexs_columns() {
        let output = Schema::new(vec![
            arrow::datatypes::Field::new("a", DataType::Utf8, false),
            arrow::datatypes::Field::new("b", DataType::Utf8, false),
        ]);
        let key = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let unique = vec![key(&["b", "a"])];
        assert!(key_problems(&key(&["a", "b"]), &unique, &output).is_empty());
        assert_eq!(key_problems(&key(&["a"]), &unique, &output).len(), 1, "a subset is not an arbiter");
        assert_eq!(key_problems(&key(&["a", "c"]), &unique, &output).len(), 2, "c is missing, and no index");
    }
}
