//! Reaching the database: the URL read into a client configuration (TLS by default, timeouts),
//! rustls with the configured roots, and the read-only look of `pushgate db status`.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{pg, schema};
use crate::config::Postgres;
use crate::spool::SpoolError;

/// A PostgreSQL URL read into a client configuration. `sslmode=verify-ca` and `verify-full`
/// read as `require`: with rustls the certificate and the host name are always checked. A URL
/// that says nothing of `sslmode` gets `require` too, not libpq's `prefer`, which would fall
/// back to plain text without a word (a local server without TLS says `sslmode=disable`).
pub(crate) fn postgres_config(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let explicit = url.contains("sslmode=");
    let url = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    let mut config: tokio_postgres::Config = url.parse()?;
    if !explicit {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// rustls with Mozilla's roots and the configured private CA.
pub(super) fn tls_config(config: &Postgres) -> Result<rustls::ClientConfig, SpoolError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &config.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| SpoolError::Io {
                what: format!("reading the CA file {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
        for c in certs {
            roots.add(c).map_err(|e| SpoolError::Io {
                what: format!("a certificate in {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// What `pushgate db status` reports of a PostgreSQL spool, read with one connection and
/// changing nothing.
pub(crate) async fn inspect(config: &Postgres) -> Result<(String, Option<i64>, i64), SpoolError> {
    let target = &config.target;
    let (client, task) = one_connection(config).await?;
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(pg(target, "reading the server version"))?
        .get(0);
    let exists: bool = client
        .query_one("SELECT to_regclass('pushgate_schema') IS NOT NULL", &[])
        .await
        .map_err(pg(target, "reading the schema version"))?
        .get(0);
    let schema = if exists {
        client
            .query_opt("SELECT version FROM pushgate_schema", &[])
            .await
            .map_err(pg(target, "reading the schema version"))?
            .map(|r| i64::from(r.get::<_, i32>(0)))
    } else {
        None
    };
    drop(client);
    task.abort();
    Ok((version, schema, schema::SCHEMA_VERSION.into()))
}

/// `pushgate db migrate`: the schema brought up to date over one connection, under the
/// migration lock only — beside a running gateway (whose gateway lock it leaves alone), as a
/// new version's migration is run before the gateways are replaced. Answers the version found.
pub(crate) async fn migrate(config: &Postgres) -> Result<i32, SpoolError> {
    let (mut client, task) = one_connection(config).await?;
    let found = schema::migrate(&mut client, &config.target).await;
    drop(client);
    task.abort();
    found
}

/// One connection outside the pool, with the task that drives it (abort it when done).
async fn one_connection(
    config: &Postgres,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), SpoolError> {
    let pg_config = postgres_config(config.url.expose())
        .map_err(pg(&config.target, "reading the PostgreSQL URL"))?;
    connect_with(&pg_config, config).await
}

/// A connection with `pg_config` over the TLS `config` asks for, and the task that drives it.
async fn connect_with(
    pg_config: &tokio_postgres::Config,
    config: &Postgres,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), SpoolError> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(config)?);
    let (client, conn) = pg_config
        .connect(tls)
        .await
        .map_err(pg(&config.target, "connecting to PostgreSQL"))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, task))
}

/// How long a connect may take before it fails (a failover's dead address, a black hole).
pub(super) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
