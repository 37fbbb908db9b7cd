//! PostgreSQL for tests: the server on `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), one fresh schema per test, and a proxy that can
//! cut the database off mid-test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use jwt_gate::store::{PostgresUserStore, PostgresUserStoreBuilder};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn random_hex() -> String {
    let mut bytes = [0_u8; 8];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A schema of its own for one test, dropped with everything in it when the test ends, pass
/// or fail. The stores create it on first use.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    pub fn fresh() -> Self {
        Self {
            name: format!("jwt_gate_test_{}", random_hex()),
        }
    }

    /// Options for a store on this schema.
    pub fn store(&self) -> PostgresUserStoreBuilder {
        PostgresUserStore::connect(&database_url()).schema(&self.name)
    }

    /// A store on this schema, migrated. Its timeout is generous: on a machine loaded by
    /// other builds the migrations alone can take seconds, and no test here measures them.
    pub async fn open(&self) -> PostgresUserStore {
        self.store()
            .timeout(std::time::Duration::from_secs(60))
            .await
            .expect("PostgreSQL is up on DATABASE_URL")
    }

    /// A plain connection, for looking behind the store's back.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop may run on a runtime thread (even while unwinding), where nothing can be
        // awaited: a thread of its own with a runtime of its own does the cleanup.
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}

/// A TCP proxy in front of PostgreSQL (or any `host:port`) that can be cut: every connection
/// through it is dropped and its port refuses new ones, as when the host goes away.
pub struct CutProxy {
    pub addr: SocketAddr,
    upstream: String,
    accept: JoinHandle<()>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CutProxy {
    pub async fn start() -> Self {
        Self::in_front_of(upstream_addr()).await
    }

    /// A proxy to `upstream` (`host:port`).
    pub async fn in_front_of(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let links = links.clone();
            let upstream = upstream.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        Self {
            addr,
            upstream,
            accept,
            links,
        }
    }

    /// `DATABASE_URL`, pointed at the proxy.
    pub fn url(&self) -> String {
        self.url_through(&database_url())
    }

    /// `url`, pointed at the proxy instead of the upstream it names.
    pub fn url_through(&self, url: &str) -> String {
        url.replacen(&self.upstream, &self.addr.to_string(), 1)
    }

    pub fn cut(&self) {
        self.accept.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The `host:port` of `DATABASE_URL`, as written in it.
fn upstream_addr() -> String {
    let url = database_url();
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}
