//! Condition math: pure functions, no I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as a reconciler decides it; the timestamp is filled in by [`set`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl Decided {
    pub fn new(type_: &'static str, status: Status, reason: &'static str, message: impl Into<String>) -> Self {
        Decided { type_, status, reason, message: message.into() }
    }
}

/// Merges `decided` into `current`: one entry per type, `lastTransitionTime` kept unless the
/// status flips, `observedGeneration` stamped on every condition. Types not decided are kept.
pub fn set(current: &[Condition], decided: &[Decided], generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let mut out: Vec<Condition> = current.to_vec();
    for d in decided {
        let previous = out.iter().position(|c| c.type_ == d.type_);
        let transition = match previous {
            Some(i) if out[i].status == d.status.as_str() => out[i].last_transition_time.clone(),
            _ => Time(now),
        };
        let condition = Condition {
            type_: d.type_.to_string(),
            status: d.status.as_str().to_string(),
            reason: d.reason.to_string(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time: transition,
        };
        match previous {
            Some(i) => out[i] = condition,
            None => out.push(condition),
        }
    }
    out
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn new_condition_gets_now() {
        let out = set(&[], &[Decided::new("Ready", Status::False, "Queued", "waiting")], Some(3), at(10));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].last_transition_time, Time(at(10)));
        assert_eq!(out[0].observed_generation, Some(3));
        assert_eq!(out[0].reason, "Queued");
    }

    #[test]
    fn same_status_keeps_transition_time_but_updates_reason_and_message() {
        let first = set(&[], &[Decided::new("Ready", Status::False, "EnvironmentNotFound", "a")], Some(1), at(10));
        let second = set(&first, &[Decided::new("Ready", Status::False, "Queued", "b")], Some(1), at(20));
        assert_eq!(second[0].last_transition_time, Time(at(10)));
        assert_eq!(second[0].reason, "Queued");
        assert_eq!(second[0].message, "b");
    }

    #[test]
    fn flipped_status_moves_transition_time() {
        let first = set(&[], &[Decided::new("Ready", Status::False, "Queued", "a")], Some(1), at(10));
        let second = set(&first, &[Decided::new("Ready", Status::True, "Succeeded", "b")], Some(2), at(20));
        assert_eq!(second[0].last_transition_time, Time(at(20)));
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn other_types_are_kept_and_order_is_stable() {
        let first = set(
            &[],
            &[
                Decided::new("Ready", Status::False, "Queued", "a"),
                Decided::new("Reconciling", Status::True, "Queued", "a"),
            ],
            Some(1),
            at(10),
        );
        let second = set(&first, &[Decided::new("Reconciling", Status::False, "Succeeded", "")], Some(1), at(20));
        let types: Vec<_> = second.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Reconciling"]);
        assert_eq!(second[0].last_transition_time, Time(at(10)));
        assert_eq!(second[1].last_transition_time, Time(at(20)));
    }
}
