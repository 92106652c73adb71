//! Tests of `input.sql`'s parsing: each type and its Arrow type, arrays and
//! structs, and each refusal at its line and column.

use super::*;
use std::path::Path;

fn parse(text: &str) -> Result<InputDecl> {
    InputDecl::parse(Path::new("job/input.sql"), text)
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn each_type_maps_to_its_arrow_type() {
    let decl = parse(
        "CREATE TABLE Events (a TEXT, b VARCHAR NOT NULL, c SMALLINT, d INTEGER, e BIGINT, f REAL, \
         g DOUBLE PRECISION, h BOOLEAN, i TIMESTAMPTZ, \"Mixed\" INT8)",
    )
    .unwrap();
    assert_eq!(decl.table, "events");
    let schema = decl.schema();
    let types: Vec<String> = schema.fields().iter().map(|f| format!("{}:{}", f.name(), f.data_type())).collect();
    assert_eq!(
        types,
        [
            "a:Utf8",
            "b:Utf8",
            "c:Int16",
            "d:Int32",
            "e:Int64",
            "f:Float32",
            "g:Float64",
            "h:Boolean",
            "i:Timestamp(µs, \"+00:00\")",
            "Mixed:Int64"
        ]
    );
    assert!(!schema.field(1).is_nullable() && schema.field(0).is_nullable());
}

#[test]
fn defaults_are_constants_of_the_columns_type() {
    let decl = parse(
        "CREATE TABLE t (a TEXT DEFAULT 'x', b SMALLINT DEFAULT -3, c DOUBLE PRECISION DEFAULT 1.5, \
         d BOOLEAN DEFAULT false, e TIMESTAMPTZ DEFAULT '2024-01-02T03:04:05Z', f TIMESTAMPTZ DEFAULT 10)",
    )
    .unwrap();
    let defaults: Vec<String> = decl.columns.iter().map(|c| format!("{:?}", c.default.as_ref().unwrap())).collect();
    assert_eq!(defaults[0], "Utf8(\"x\")");
    assert_eq!(defaults[1], "Int16(-3)");
    assert_eq!(defaults[2], "Float64(1.5)");
    assert_eq!(defaults[3], "Boolean(false)");
    assert!(defaults[4].contains("1704164645000000"), "{}", defaults[4]);
    assert!(defaults[5].contains("10000000"), "{}", defaults[5]);
    assert!(err("CREATE TABLE t (a SMALLINT DEFAULT 40000)").contains("out of the column's range"));
    assert!(err("CREATE TABLE t (a INT DEFAULT 'x')").contains("not a constant of the column's type (an integer)"));
    assert!(err("CREATE TABLE t (a INT DEFAULT 1 + 1)").contains("a default must be a constant"));
}

#[test]
fn checks_on_columns_and_the_table_keep_their_names() {
    let decl = parse(
        "CREATE TABLE t (\n  a BIGINT CHECK (a > 0),\n  b BIGINT CONSTRAINT b_small CHECK (b < 10),\n  \
         CONSTRAINT a_before_b CHECK (a <= b)\n)",
    )
    .unwrap();
    let names: Vec<_> = decl.checks.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, [None, Some("b_small".into()), Some("a_before_b".into())]);
    assert_eq!(decl.checks[0].at, "job/input.sql:2:19");
    assert_eq!(decl.checks[2].expr.to_string(), "a <= b");
}

#[test]
fn a_declaration_that_does_not_parse_is_refused_at_its_line_and_column() {
    let e = err("CREATE TABLE t (\n  a TEXT,\n  b TEXT NOT NULL NOT,\n)");
    assert!(e.starts_with("job: job/input.sql:3:"), "{e}");
    assert!(e.contains("Expected"), "{e}");
}

#[test]
fn unsupported_types_and_options_are_refused_naming_what_is_accepted() {
    let e = err("CREATE TABLE t (\n  a TEXT,\n  price NUMERIC(10, 2)\n)");
    assert!(e.starts_with("job: job/input.sql:3:3: column price: type NUMERIC(10,2) is not supported"), "{e}");
    assert!(e.contains("TEXT, VARCHAR, SMALLINT"), "{e}");
    assert!(err("CREATE TABLE t (a VARCHAR(10))").contains("CHECK (length(a) <= 100)"));
    assert!(err("CREATE TABLE t (a BIGNT)").contains("type BIGNT is not supported"));
    assert!(err("CREATE TABLE t (a TEXT UNIQUE)").contains("UNIQUE is not supported"));
    assert!(err("CREATE TABLE t (a TEXT, PRIMARY KEY (a))").contains("only CHECK constraints"));
    assert!(err("CREATE TABLE t (a TEXT) WITH (format = 'json')").contains("go in job.toml"));
    assert!(err("CREATE TABLE t (a TEXT, A TEXT)").contains("column a is declared twice"));
    assert!(err("SELECT 1").contains("exactly one CREATE TABLE"));
    assert!(err("CREATE TABLE t (a TEXT); CREATE TABLE u (b TEXT)").contains("found 2"));
}

#[test]
fn arrays_and_structs_nest_and_map_to_lists_and_structs() {
    let decl = parse(
        "CREATE TABLE c (tags TEXT[], scores ARRAY<INTEGER>, \
         address STRUCT<City TEXT, geo STRUCT<lat DOUBLE PRECISION, lon DOUBLE PRECISION>, floors SMALLINT[]>)",
    )
    .unwrap();
    let types: Vec<String> = decl.columns.iter().map(|c| c.ty.arrow().to_string()).collect();
    assert_eq!(types[0], "List(Utf8)");
    assert_eq!(types[1], "List(Int32)");
    assert!(
        types[2].starts_with("Struct(") && types[2].contains("city") && types[2].contains("List(Int16)"),
        "{types:?}"
    );
    let ColumnType::Struct(fields) = &decl.columns[2].ty else { panic!("{:?}", decl.columns[2].ty) };
    assert_eq!(fields[0].0, "city", "unquoted names in lower case, as at the top");
}

#[test]
fn nested_timestamps_defaults_and_unnamed_or_repeated_struct_fields_are_refused() {
    let e = err("CREATE TABLE c (at TIMESTAMPTZ[])");
    assert!(e.contains("TIMESTAMPTZ inside an array or struct is not supported") && e.contains(":1:17"), "{e}");
    let e = err("CREATE TABLE c (tags TEXT[] DEFAULT 'x')");
    assert!(e.contains("takes no DEFAULT"), "{e}");
    let e = err("CREATE TABLE c (a STRUCT<x TEXT, x INTEGER>)");
    assert!(e.contains("field x is declared twice"), "{e}");
    let e = err("CREATE TABLE c (a STRUCT<TEXT>)");
    assert!(e.contains("needs a name"), "{e}");
    let e = err("CREATE TABLE c (a NUMERIC[])");
    assert!(e.contains("type NUMERIC is not supported") && e.contains("T[]"), "{e}");
}
