//! The audit log: one row in PostgreSQL for every answered request (who,
//! where, what it cost, how good the answer was), in a table partitioned by
//! month.
//!
//! - [`schema`]: versioned migrations, applied at start under a lock;
//! - [`partitions`]: monthly partitions created ahead, dropped past the
//!   retention;
//! - [`store`]: writing rows in batches, reading one back, usage totals.

pub mod partitions;
pub mod schema;
pub mod store;

pub use store::AuditRow;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("migration {version} ({name}): {source}")]
    Migration {
        version: i32,
        name: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("the database has migration {0}, newer than this build knows: run a newer release")]
    NewerSchema(i32),
}

/// Connects to `url` (`postgres://user@host:port/db`) without TLS, for a
/// server on this host or a private network; the connection runs on a task
/// of its own.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, AuditError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "audit database connection ended");
        }
    });
    Ok(client)
}
