//! [`AnyHost`]: the PM host chosen at run time, as one concrete type.
//!
//! The engine and the connector are generic over their [`PmHost`]; each host they are used with
//! is a full copy of their code (every async state machine of the engine) in the program that
//! names it. A program that picks its host from configuration, as `taskbridge serve` does, names
//! this one type instead of each host, so it carries one copy: the cost is one `match` per PM
//! call, next to a database or HTTP round trip.

use super::embedded::EmbeddedHost;
use super::host::{
    HostError, HostEvent, PlanRevision, PmHost, StatusUpdate, Submitted, UnitAddress, UpdateOutcome,
};
use super::model::{AssignmentUid, Project, ProjectGuid};
use super::redmine::RedmineHost;

/// The PM host chosen by configuration: the embedded store or a Redmine server.
#[derive(Clone)]
pub enum AnyHost {
    /// The embedded PM host (SQLite or PostgreSQL).
    Embedded(EmbeddedHost),
    /// A Redmine server.
    Redmine(RedmineHost),
}

impl AnyHost {
    /// The embedded host, when it is the one chosen.
    pub fn embedded(&self) -> Option<&EmbeddedHost> {
        match self {
            AnyHost::Embedded(host) => Some(host),
            AnyHost::Redmine(_) => None,
        }
    }
}

impl From<EmbeddedHost> for AnyHost {
    fn from(host: EmbeddedHost) -> Self {
        AnyHost::Embedded(host)
    }
}

impl From<RedmineHost> for AnyHost {
    fn from(host: RedmineHost) -> Self {
        AnyHost::Redmine(host)
    }
}

/// Calls the same method on whichever host it is.
macro_rules! either {
    ($self:ident, $h:ident => $call:expr) => {
        match $self {
            AnyHost::Embedded($h) => $call.await,
            AnyHost::Redmine($h) => $call.await,
        }
    };
}

impl PmHost for AnyHost {
    async fn projects(&self) -> Result<Vec<ProjectGuid>, HostError> {
        either!(self, h => PmHost::projects(h))
    }

    async fn project(&self, guid: ProjectGuid) -> Result<Option<Project>, HostError> {
        either!(self, h => PmHost::project(h, guid))
    }

    async fn project_part(
        &self,
        guid: ProjectGuid,
        uids: &[AssignmentUid],
    ) -> Result<Option<Project>, HostError> {
        either!(self, h => PmHost::project_part(h, guid, uids))
    }

    async fn project_units(
        &self,
        guid: ProjectGuid,
    ) -> Result<Option<Vec<UnitAddress>>, HostError> {
        either!(self, h => PmHost::project_units(h, guid))
    }

    async fn plan_revision(&self, guid: ProjectGuid) -> Result<Option<PlanRevision>, HostError> {
        either!(self, h => PmHost::plan_revision(h, guid))
    }

    async fn submit_status_update(&self, update: StatusUpdate) -> Result<UpdateOutcome, HostError> {
        either!(self, h => PmHost::submit_status_update(h, update))
    }

    async fn submit_status_updates(&self, updates: Vec<StatusUpdate>) -> Submitted {
        either!(self, h => PmHost::submit_status_updates(h, updates))
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HostEvent> {
        match self {
            AnyHost::Embedded(h) => PmHost::subscribe(h),
            AnyHost::Redmine(h) => PmHost::subscribe(h),
        }
    }
}
