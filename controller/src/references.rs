//! Problems with what an object names, and the conditions that say so. Pure: no I/O.

use slipway_crds::conditions::{reasons, types};

use crate::conditions::{Decided, Status};

/// A problem with a reference: a condition reason and a message that names the object and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// Ready=False, Reconciling=False, Stalled=True, all for the same problem.
pub fn stalled(problem: &Problem) -> Vec<Decided> {
    vec![
        Decided::new(types::READY, Status::False, problem.reason, problem.message.clone()),
        Decided::new(types::RECONCILING, Status::False, problem.reason, problem.message.clone()),
        Decided::new(types::STALLED, Status::True, problem.reason, problem.message.clone()),
    ]
}

/// Ready=False, Reconciling=True, Stalled=False: waiting, but moving.
pub fn progressing(reason: &'static str, message: String) -> Vec<Decided> {
    vec![
        Decided::new(types::READY, Status::False, reason, message.clone()),
        Decided::new(types::RECONCILING, Status::True, reason, message.clone()),
        Decided::new(types::STALLED, Status::False, reason, message),
    ]
}

/// The problem of a `kind` object naming an Environment that does not exist.
pub fn environment_not_found(kind: &str, environment: &str, namespace: &str) -> Problem {
    Problem {
        reason: reasons::ENVIRONMENT_NOT_FOUND,
        message: format!(
            "Environment {environment:?} not found in namespace {namespace:?}: create it, or create a new \
             {kind} naming an existing Environment"
        ),
    }
}
