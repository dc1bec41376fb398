//! A Cell's status from what was observed: its pod, its StatefulSet's
//! rollout and the control plane's record (alive, lifecycle, tenants held).
//! Pure, so every transition is tested without a cluster; a condition keeps
//! its `lastTransitionTime` unless its status flips.

use control_plane::admin::CellSummary;
use control_plane::model::Lifecycle;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{CellStatus, Phase};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DRAINING: &str = "Draining";
pub const DEGRADED: &str = "Degraded";

/// Reasons a container waits that will not go away by themselves.
const FAILED_WAITS: [&str; 7] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The cell's pod as the operator found it.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    Missing,
    /// Created, not ready yet (scheduling, pulling, opening its shard).
    Starting,
    Ready,
    /// Not ready after it had started, or its container restarts.
    Failing {
        reason: String,
    },
}

impl PodState {
    pub fn of(pod: Option<&Pod>) -> PodState {
        let Some(pod) = pod else {
            return PodState::Missing;
        };
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            return PodState::Ready;
        }
        if status.phase.as_deref() == Some("Failed") {
            return PodState::Failing {
                reason: status.reason.unwrap_or_else(|| "pod failed".to_owned()),
            };
        }
        let waiting = status.container_statuses.iter().flatten().find_map(|c| {
            let why = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
            (c.restart_count > 0 || FAILED_WAITS.contains(&why.as_str()))
                .then(|| format!("container {} is waiting: {why}", c.name))
        });
        match waiting {
            Some(reason) => PodState::Failing { reason },
            None => PodState::Starting,
        }
    }
}

/// What the control plane said, or why it could not be asked.
#[derive(Debug)]
pub enum ControlPlane {
    Known(Box<CellSummary>),
    NotRegistered,
    Unreachable(String),
}

/// Everything one reconcile observed.
#[derive(Debug)]
pub struct Observed {
    pub generation: Option<i64>,
    pub endpoint: String,
    pub pod: PodState,
    /// The StatefulSet runs the current pod template on every replica.
    pub rolled_out: bool,
    pub control_plane: ControlPlane,
    /// The spec could not be rendered; the message says why.
    pub invalid_spec: Option<String>,
}

/// Whether `sts` runs its latest pod template, as far as its status tells.
pub fn rolled_out(sts: &StatefulSet) -> bool {
    let generation = sts.metadata.generation.unwrap_or(0);
    let Some(status) = &sts.status else {
        return false;
    };
    let wanted = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
}

/// The status `observed` describes, given the previous one.
pub fn status(previous: Option<&CellStatus>, observed: &Observed, now: Timestamp) -> CellStatus {
    let previous_phase = previous.and_then(|p| p.phase);
    let (lifecycle, alive, tenants, moves) = match &observed.control_plane {
        ControlPlane::Known(c) => (
            c.spec.as_ref().map(|s| s.lifecycle),
            c.alive.is_some(),
            c.tenants,
            c.moves,
        ),
        _ => (None, false, 0, 0),
    };
    let phase = match lifecycle {
        Some(Lifecycle::Joining) | None => match &observed.control_plane {
            ControlPlane::Unreachable(_) => previous_phase.or(Some(Phase::Joining)),
            _ => Some(Phase::Joining),
        },
        Some(Lifecycle::Active) => Some(Phase::Active),
        Some(Lifecycle::Draining) => Some(Phase::Draining),
        Some(Lifecycle::Drained | Lifecycle::Removed) => Some(Phase::Drained),
    };
    let tenants_text = |n: usize| match n {
        1 => "1 tenant".to_owned(),
        n => format!("{n} tenants"),
    };

    let ready = match (&observed.pod, &observed.control_plane, lifecycle) {
        (_, ControlPlane::Unreachable(e), _) => (false, "ControlPlaneUnreachable", e.clone()),
        (PodState::Missing, ..) => (
            false,
            "PodMissing",
            "the cell's pod does not exist yet".into(),
        ),
        (PodState::Starting, ..) => (false, "PodStarting", "the cell's pod is starting".into()),
        (PodState::Failing { reason }, ..) => (false, "PodFailing", reason.clone()),
        (PodState::Ready, ControlPlane::NotRegistered, _) => (
            false,
            "NotRegistered",
            "the control plane has no record of the cell".into(),
        ),
        (PodState::Ready, _, _) if !alive => (
            false,
            "NotAlive",
            "the cell's liveness lease is not held in etcd".into(),
        ),
        (PodState::Ready, _, Some(Lifecycle::Active)) => (
            true,
            "Serving",
            format!("serving {}", tenants_text(tenants)),
        ),
        (PodState::Ready, _, Some(Lifecycle::Draining)) => (
            false,
            "Draining",
            "the cell takes no new tenants while it drains".into(),
        ),
        (PodState::Ready, _, Some(Lifecycle::Drained | Lifecycle::Removed)) => {
            (false, "Drained", "the cell holds no tenant".into())
        }
        (PodState::Ready, _, Some(Lifecycle::Joining) | None) => (
            false,
            "Joining",
            "tenants are being moved onto the cell".into(),
        ),
    };
    let progressing = if !observed.rolled_out {
        (
            true,
            "RollingOut",
            "the pod is being replaced with the current spec".to_owned(),
        )
    } else if lifecycle == Some(Lifecycle::Joining) {
        (
            true,
            "TenantsMovingIn",
            "the control plane is moving the cell's share of tenants onto it".to_owned(),
        )
    } else if moves > 0 {
        (
            true,
            "TenantsMoving",
            format!("{moves} tenant moves under way"),
        )
    } else {
        (false, "Stable", "nothing is changing".to_owned())
    };
    let draining = match lifecycle {
        Some(Lifecycle::Draining) => (
            true,
            "TenantsMovingOut",
            format!("{} left to move off", tenants_text(tenants)),
        ),
        Some(Lifecycle::Drained | Lifecycle::Removed) => {
            (false, "Drained", "every tenant was moved off".to_owned())
        }
        _ => (false, "NotDraining", "the cell takes tenants".to_owned()),
    };
    let degraded = match (
        &observed.invalid_spec,
        &observed.control_plane,
        &observed.pod,
    ) {
        (Some(problem), ..) => (true, "InvalidSpec", problem.clone()),
        (None, ControlPlane::Unreachable(e), _) => (true, "ControlPlaneUnreachable", e.clone()),
        (None, _, PodState::Failing { reason }) => (true, "PodFailing", reason.clone()),
        (None, _, PodState::Ready) if !alive && observed.rolled_out => (
            true,
            "NotAlive",
            "the pod is ready but the cell holds no liveness lease".to_owned(),
        ),
        _ => (false, "AsExpected", "no fault seen".to_owned()),
    };

    let conditions = [
        (READY, ready),
        (PROGRESSING, progressing),
        (DRAINING, draining),
        (DEGRADED, degraded),
    ]
    .into_iter()
    .map(|(type_, (is, reason, message))| {
        let status = if is { "True" } else { "False" }.to_owned();
        let since = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: observed.generation,
            last_transition_time: since,
        }
    })
    .collect();

    CellStatus {
        phase,
        conditions,
        // No endpoint before the spec could be rendered.
        endpoint: (!observed.endpoint.is_empty()).then(|| observed.endpoint.clone()),
        tenants: u32::try_from(tenants).unwrap_or(u32::MAX),
        observed_generation: observed.generation,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]
mod tests {
    use control_plane::model::{CellAlive, CellSpec};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn known(lifecycle: Lifecycle, alive: bool, tenants: usize, moves: usize) -> ControlPlane {
        ControlPlane::Known(Box::new(CellSummary {
            id: "cell-c".into(),
            spec: Some(CellSpec {
                region: "eu-west".into(),
                endpoint: "http://cell-c-0.cell-c.cellnet.svc.cluster.local:8080".into(),
                template: "standard".into(),
                lifecycle,
            }),
            alive: alive.then(|| CellAlive {
                endpoint: "http://cell-c-0.cell-c.cellnet.svc.cluster.local:8080".into(),
                started_at_ms: 1,
            }),
            tenants,
            moves,
        }))
    }

    fn observed(pod: PodState, rolled_out: bool, control_plane: ControlPlane) -> Observed {
        Observed {
            generation: Some(3),
            endpoint: "http://cell-c-0.cell-c.cellnet.svc.cluster.local:8080".into(),
            pod,
            rolled_out,
            control_plane,
            invalid_spec: None,
        }
    }

    fn status_and_reason<'a>(s: &'a CellStatus, type_: &str) -> (&'a str, &'a str) {
        let (status, reason, _) = condition(s, type_);
        (status, reason)
    }

    fn condition<'a>(s: &'a CellStatus, type_: &str) -> (&'a str, &'a str, &'a Condition) {
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str(), c)
    }

    #[test]
    fn a_new_cell_is_joining_and_rolling_out_with_every_condition_stamped() {
        let s = status(
            None,
            &observed(PodState::Missing, false, ControlPlane::NotRegistered),
            at(0),
        );
        assert_eq!(s.phase, Some(Phase::Joining));
        assert_eq!(s.conditions.len(), 4);
        assert_eq!(status_and_reason(&s, READY), ("False", "PodMissing"));
        assert_eq!(condition(&s, PROGRESSING).1, "RollingOut");
        assert_eq!(condition(&s, DRAINING).1, "NotDraining");
        assert_eq!(condition(&s, DEGRADED).0, "False");
        for c in &s.conditions {
            assert_eq!(c.observed_generation, Some(3));
            assert_eq!(c.last_transition_time, Time(at(0)));
            assert!(
                c.reason.chars().next().unwrap().is_ascii_uppercase() && !c.reason.contains(' ')
            );
        }
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.tenants, 0);
    }

    #[test]
    fn a_serving_cell_is_ready_and_only_flipped_conditions_get_a_new_transition_time() {
        let joining = status(
            None,
            &observed(PodState::Ready, true, known(Lifecycle::Joining, true, 2, 2)),
            at(0),
        );
        assert_eq!(condition(&joining, READY).1, "Joining");
        assert_eq!(condition(&joining, PROGRESSING).1, "TenantsMovingIn");
        let active = status(
            Some(&joining),
            &observed(PodState::Ready, true, known(Lifecycle::Active, true, 5, 0)),
            at(60),
        );
        assert_eq!(active.phase, Some(Phase::Active));
        assert_eq!(active.tenants, 5);
        let (is, reason, ready) = condition(&active, READY);
        assert_eq!(
            (is, reason, ready.message.as_str()),
            ("True", "Serving", "serving 5 tenants")
        );
        assert_eq!(ready.last_transition_time, Time(at(60)), "Ready flipped");
        let (is, reason, progressing) = condition(&active, PROGRESSING);
        assert_eq!((is, reason), ("False", "Stable"));
        assert_eq!(
            progressing.last_transition_time,
            Time(at(60)),
            "Progressing flipped"
        );
        let (_, _, draining) = condition(&active, DRAINING);
        assert_eq!(
            draining.last_transition_time,
            Time(at(0)),
            "Draining stayed False"
        );
        // Nothing changes: the same status, so nothing needs writing.
        let again = status(
            Some(&active),
            &observed(PodState::Ready, true, known(Lifecycle::Active, true, 5, 0)),
            at(120),
        );
        assert_eq!(again, active);
    }

    #[test]
    fn a_draining_cell_counts_down_its_tenants_then_is_drained() {
        let draining = status(
            None,
            &observed(
                PodState::Ready,
                true,
                known(Lifecycle::Draining, true, 3, 3),
            ),
            at(0),
        );
        assert_eq!(draining.phase, Some(Phase::Draining));
        let (is, reason, c) = condition(&draining, DRAINING);
        assert_eq!(
            (is, reason, c.message.as_str()),
            ("True", "TenantsMovingOut", "3 tenants left to move off")
        );
        assert_eq!(condition(&draining, READY).1, "Draining");
        let drained = status(
            Some(&draining),
            &observed(PodState::Ready, true, known(Lifecycle::Drained, true, 0, 0)),
            at(30),
        );
        assert_eq!(drained.phase, Some(Phase::Drained));
        assert_eq!(status_and_reason(&drained, DRAINING), ("False", "Drained"));
    }

    #[test]
    fn faults_show_as_degraded_with_their_reason() {
        let active = status(
            None,
            &observed(PodState::Ready, true, known(Lifecycle::Active, true, 1, 0)),
            at(0),
        );
        let away = status(
            Some(&active),
            &observed(
                PodState::Ready,
                true,
                ControlPlane::Unreachable("connection refused".into()),
            ),
            at(10),
        );
        assert_eq!(
            away.phase,
            Some(Phase::Active),
            "the last known phase stays"
        );
        assert_eq!(
            status_and_reason(&away, DEGRADED),
            ("True", "ControlPlaneUnreachable")
        );
        assert_eq!(condition(&away, READY).1, "ControlPlaneUnreachable");

        let lost_lease = status(
            None,
            &observed(PodState::Ready, true, known(Lifecycle::Active, false, 1, 0)),
            at(0),
        );
        assert_eq!(condition(&lost_lease, DEGRADED).1, "NotAlive");

        let mut bad = observed(PodState::Missing, false, ControlPlane::NotRegistered);
        bad.invalid_spec = Some("spec.template: \"huge\" is not a cell template".into());
        let s = status(None, &bad, at(0));
        let (is, reason, c) = condition(&s, DEGRADED);
        assert_eq!((is, reason), ("True", "InvalidSpec"));
        assert!(c.message.contains("spec.template"));
    }

    #[test]
    fn a_crash_looping_container_is_failing_and_a_starting_one_is_not() {
        let pod = |restarts: i32, waiting: &str, ready: &str| Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..PodCondition::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "cell".into(),
                    restart_count: restarts,
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(waiting.into()),
                            message: None,
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            PodState::of(Some(&pod(0, "ContainerCreating", "False"))),
            PodState::Starting
        );
        assert!(
            matches!(PodState::of(Some(&pod(4, "CrashLoopBackOff", "False"))), PodState::Failing { reason } if reason.contains("CrashLoopBackOff"))
        );
        assert!(matches!(
            PodState::of(Some(&pod(0, "ImagePullBackOff", "False"))),
            PodState::Failing { .. }
        ));
        assert!(matches!(
            PodState::of(Some(&pod(0, "CreateContainerConfigError", "False"))),
            PodState::Failing { .. }
        ));
        assert_eq!(PodState::of(Some(&pod(0, "", "True"))), PodState::Ready);
        assert_eq!(PodState::of(None), PodState::Missing);
    }
}
