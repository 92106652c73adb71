//! One lookup's rows from Postgres into Arrow: the query is prepared (its
//! columns' types give the schema, checked before any row is read), then its
//! rows are streamed into column builders in one REPEATABLE READ
//! transaction, which also reads the version of an on-change lookup (so
//! the version and the rows are of one snapshot).

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row};

/// Why a lookup could not be read (the caller names the lookup and file).
pub(crate) enum LoadError {
    /// Postgres refused the query or failed while it ran.
    Postgres(tokio_postgres::Error),
    /// A column sparklet does not read, or Arrow refused the rows.
    Other(String),
}

impl From<tokio_postgres::Error> for LoadError {
    fn from(e: tokio_postgres::Error) -> Self {
        LoadError::Postgres(e)
    }
}

/// The Arrow type of a column of Postgres type `ty`.
fn arrow_type(ty: &Type) -> Option<DataType> {
    Some(match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::BOOL => DataType::Boolean,
        _ => return None,
    })
}

/// The schema of `query`'s rows, without running it.
pub(crate) async fn schema(client: &Client, query: &str) -> Result<SchemaRef, LoadError> {
    schema_of(&client.prepare(query).await?)
}

fn schema_of(statement: &tokio_postgres::Statement) -> Result<SchemaRef, LoadError> {
    let mut fields = Vec::new();
    for column in statement.columns() {
        let ty = arrow_type(column.type_()).ok_or_else(|| {
            LoadError::Other(format!(
                "column {} is {}, which a lookup does not read: cast it in the query (::text, ::int8, ::float8, ::bool)",
                column.name(),
                column.type_()
            ))
        })?;
        fields.push(Field::new(column.name(), ty, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Runs `query` and returns its rows, with the version `version_query`
/// reads in the same snapshot (0 without one).
pub(crate) async fn rows(
    client: &Client,
    query: &str,
    version_query: Option<&str>,
) -> Result<(RecordBatch, i64), LoadError> {
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    // The first statement takes the snapshot, which the rows are read in.
    let version = match version_query {
        Some(sql) => client.query_one(sql, &[]).await?.try_get(0)?,
        None => 0,
    };
    let statement = client.prepare(query).await?;
    let schema = schema_of(&statement)?;
    let mut builders: Vec<Box<dyn ArrayBuilder>> =
        schema.fields().iter().map(|f| arrow::array::make_builder(f.data_type(), 1024)).collect();
    let stream = client.query_raw(&statement, std::iter::empty::<i32>()).await?;
    futures::pin_mut!(stream);
    while let Some(row) = stream.try_next().await? {
        for (i, builder) in builders.iter_mut().enumerate() {
            append(builder.as_mut(), &row, i)?;
        }
    }
    client.batch_execute("COMMIT").await?;
    let columns: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
    let batch = RecordBatch::try_new(schema, columns).map_err(|e| LoadError::Other(e.to_string()))?;
    Ok((batch, version))
}

/// Appends column `i` of `row` to `builder` (made for its type).
fn append(builder: &mut dyn ArrayBuilder, row: &Row, i: usize) -> Result<(), LoadError> {
    let any = builder.as_any_mut();
    if let Some(b) = any.downcast_mut::<StringBuilder>() {
        b.append_option(row.try_get::<_, Option<&str>>(i)?);
    } else if let Some(b) = any.downcast_mut::<Int16Builder>() {
        b.append_option(row.try_get::<_, Option<i16>>(i)?);
    } else if let Some(b) = any.downcast_mut::<Int32Builder>() {
        b.append_option(row.try_get::<_, Option<i32>>(i)?);
    } else if let Some(b) = any.downcast_mut::<Int64Builder>() {
        b.append_option(row.try_get::<_, Option<i64>>(i)?);
    } else if let Some(b) = any.downcast_mut::<Float32Builder>() {
        b.append_option(row.try_get::<_, Option<f32>>(i)?);
    } else if let Some(b) = any.downcast_mut::<Float64Builder>() {
        b.append_option(row.try_get::<_, Option<f64>>(i)?);
    } else if let Some(b) = any.downcast_mut::<BooleanBuilder>() {
        b.append_option(row.try_get::<_, Option<bool>>(i)?);
    } else {
        return Err(LoadError::Other(format!("column {i}: no builder for its type")));
    }
    Ok(())
}
