//! Postgres connections: one place that connects (TLS as set up in
//! [`PostgresConfig`]), spawns the connection task and words the error so it
//! names the target (never the password); a connection that LISTENs
//! ([`listen`]) and one kept for a repeated version check ([`Probe`]).

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, NoTls, Socket};

use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// Connects to Postgres for `purpose` (e.g. "the feedback sink").
pub async fn connect(config: &PostgresConfig, purpose: &str) -> Result<Client> {
    match &config.tls {
        Some(tls) => connect_with(config, purpose, tls.clone()).await,
        None => connect_with(config, purpose, NoTls).await,
    }
}

async fn connect_with<T>(config: &PostgresConfig, purpose: &str, tls: T) -> Result<Client>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config
        .parsed
        .connect(tls)
        .await
        .map_err(|e| Error::postgres(format!("connecting to {} for {purpose}", config.target()), e))?;
    let target = config.target();
    let purpose = purpose.to_string();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(target = %target, purpose = %purpose, cause = %err, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Connects and LISTENs on `channel` for `purpose` ("subscribers changes"):
/// the client, and the payloads of the channel's notifications (the
/// receiver ends with the connection).
pub(crate) async fn listen(
    config: &PostgresConfig,
    channel: &'static str,
    purpose: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<String>)> {
    let (client, payloads) = match &config.tls {
        Some(tls) => listen_with(config, channel, purpose, tls.clone()).await?,
        None => listen_with(config, channel, purpose, NoTls).await?,
    };
    let listening = format!("LISTEN {channel}");
    client.batch_execute(&listening).await.map_err(|e| Error::postgres(format!("listening for {purpose}"), e))?;
    Ok((client, payloads))
}

async fn listen_with<T>(
    config: &PostgresConfig,
    channel: &'static str,
    purpose: &str,
    tls: T,
) -> Result<(Client, mpsc::UnboundedReceiver<String>)>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config
        .parsed
        .connect(tls)
        .await
        .map_err(|e| Error::postgres(format!("connecting to {} to listen for {purpose}", config.target()), e))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let purpose = purpose.to_string();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == channel => {
                    if tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(purpose = %purpose, cause = %e, "a listener's connection closed");
                    break;
                }
            }
        }
    });
    Ok((client, rx))
}

/// A connection kept for one small query asked again and again (a version
/// check before each plan), made again after a failure or a timeout.
#[derive(Default)]
pub(crate) struct Probe {
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Probe {
    /// The one integer `sql` gives, within `within`; `purpose` ("the
    /// subscribers version check") names it in errors.
    pub(crate) async fn query_i64(
        &self,
        config: &PostgresConfig,
        purpose: &str,
        sql: &str,
        within: Duration,
    ) -> Result<i64> {
        let mut client = self.client.lock().await;
        let read = tokio::time::timeout(within, async {
            if client.is_none() {
                *client = Some(connect(config, purpose).await?);
            }
            let probe = client.as_ref().ok_or_else(|| Error::Runtime(format!("no connection for {purpose}")))?;
            let failed = |e| Error::postgres(format!("{purpose} on {}", config.target()), e);
            probe.query_one(sql, &[]).await.map_err(failed)?.try_get(0).map_err(failed)
        })
        .await;
        let value = read.unwrap_or_else(|_| {
            Err(Error::Runtime(format!("postgres: {} did not answer {purpose} within {within:?}", config.target())))
        });
        if value.is_err() {
            *client = None;
        }
        value
    }
}

/// Runs `CREATE ... IF NOT EXISTS` DDL under a transaction-scoped advisory
/// lock: Postgres's `IF NOT EXISTS` is not safe against a concurrent
/// creation (two shards starting at once: "duplicate key value violates
/// unique constraint pg_type_typname_nsp_index"), so creators take turns.
pub(crate) async fn create_if_missing(client: &Client, ddl: &str) -> std::result::Result<(), tokio_postgres::Error> {
    let script = format!(
        "BEGIN;\nSELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('sparklet-ddl'));\n{ddl};\nCOMMIT;"
    );
    let result = client.batch_execute(&script).await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// Creates sparklet's table `name` with `ddl` (`CREATE TABLE IF NOT
/// EXISTS`) unless the search_path finds it already: a role without CREATE
/// on the schema runs with tables an administrator made (`sparklet setup
/// --print-sql`). Either way the table must then pass [`check_trusted`].
pub(crate) async fn ensure_table(client: &Client, name: &str, ddl: &str, target: &str) -> Result<()> {
    let err = |e| Error::postgres(format!("creating {name} on {target}"), e);
    let found = client.query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&name]).await.map_err(err)?;
    if !found.get::<_, bool>(0) {
        create_if_missing(client, ddl).await.map_err(err)?;
    }
    check_trusted(client, Object::Table(name), target).await
}

/// An object sparklet uses, looked up through the search_path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Object<'a> {
    Table(&'a str),
    /// A function without arguments.
    Function(&'a str),
}

/// Owner, whether that owner is trusted, and the triggers sparklet did not
/// create on it. Trusted: the current role, the schema's owner (or a member
/// of it) or a superuser: each could replace the object anyway. (Not "a role
/// the current one could act as": a superuser can act as anyone.) Anyone else's table or function would run their code (a trigger,
/// a new body) with sparklet's rights.
const TRUST: &str = "o.owner = n.nspowner
         OR o.owner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
         OR pg_catalog.pg_has_role(o.owner, n.nspowner, 'MEMBER')
         OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = o.owner)";

/// Refuses (an [`Error::PostgresObject`]) an object that another role owns
/// or that carries triggers; a missing object passes (its creator reports
/// that).
pub(crate) async fn check_trusted(client: &Client, object: Object<'_>, target: &str) -> Result<()> {
    let (kind, name, from) = match object {
        Object::Table(name) => (
            "table",
            name,
            "(SELECT c.oid, c.relowner AS owner, c.relnamespace AS ns FROM pg_catalog.pg_class c
                WHERE c.oid = pg_catalog.to_regclass($1))",
        ),
        Object::Function(name) => (
            "function",
            name,
            "(SELECT p.oid, p.proowner AS owner, p.pronamespace AS ns FROM pg_catalog.pg_proc p
                WHERE p.oid = pg_catalog.to_regprocedure($1 || '()'))",
        ),
    };
    let sql = format!(
        "SELECT n.nspname::text, pg_catalog.pg_get_userbyid(o.owner)::text, ({TRUST}) AS trusted,
            (SELECT pg_catalog.string_agg(t.tgname::text, ', ') FROM pg_catalog.pg_trigger t
              WHERE t.tgrelid = o.oid AND NOT t.tgisinternal)
         FROM {from} o JOIN pg_catalog.pg_namespace n ON n.oid = o.ns"
    );
    let row = client
        .query_opt(&sql, &[&name])
        .await
        .map_err(|e| Error::postgres(format!("checking the owner of {kind} {name} on {target}"), e))?;
    let Some(row) = row else { return Ok(()) };
    let (schema, owner): (String, String) = (row.get(0), row.get(1));
    let object = match name.contains('.') {
        true => format!("{kind} {name} on {target}"),
        false => format!("{kind} {schema}.{name} on {target}"),
    };
    if !row.get::<_, bool>(2) {
        let problem = format!("belongs to role {owner}, which is neither sparklet's role, the schema's owner nor a superuser: its owner could run code as sparklet");
        return Err(Error::PostgresObject { object, problem });
    }
    if let Some(triggers) = row.get::<_, Option<String>>(3) {
        let problem =
            format!("has triggers sparklet did not create ({triggers}): they would run with sparklet's rights");
        return Err(Error::PostgresObject { object, problem });
    }
    Ok(())
}

/// `name` as a quoted SQL identifier (`"a""b"` for `a"b`).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
