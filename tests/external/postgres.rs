//! A throw-away PostgreSQL cluster for the tests (the cluster itself is
//! `tests/external/pg_cluster.rs`, shared with the benchmark): a missing server is reported as
//! not checked (failing under `TASKBRIDGE_TEST_REQUIRE_ALL`), and a cluster that cannot start
//! fails the test.

use std::ops::Deref;

use super::not_checked;
use super::pg_cluster;

pub use super::pg_cluster::INSTALL_POSTGRES;

/// A running cluster; the shared cluster's methods (`url`, `kill`, `log`, `port`) through
/// `Deref`.
pub struct Cluster(pg_cluster::Cluster);

impl Deref for Cluster {
    type Target = pg_cluster::Cluster;

    fn deref(&self) -> &pg_cluster::Cluster {
        &self.0
    }
}

impl Cluster {
    /// Starts a cluster, or reports `what` as not checked (failing under
    /// `TASKBRIDGE_TEST_REQUIRE_ALL`) when PostgreSQL is not installed.
    pub fn start(what: &str) -> Option<Cluster> {
        let Some(bin) = pg_cluster::server_bin() else {
            not_checked(what, "PostgreSQL server (initdb)", INSTALL_POSTGRES);
            return None;
        };
        match pg_cluster::Cluster::start_with(bin) {
            Ok(cluster) => Some(Cluster(cluster)),
            Err(e) => panic!("{e}"),
        }
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.0
            .try_create_database(name)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server again on the same port after [`pg_cluster::Cluster::kill`].
    pub fn restart(&self) {
        self.0.try_restart().unwrap_or_else(|e| panic!("{e}"));
    }
}
