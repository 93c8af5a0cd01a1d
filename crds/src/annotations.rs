//! Annotations of a DeployRequest that record who asked for it and who approved it.
//!
//! They are facts, not claims, because the install ships a ValidatingAdmissionPolicy
//! (`manifests/install/admission-policy.yaml`, the chart's `admission-policy.yaml`): the API server
//! admits each only with the name of the user it authenticated for that very request.

/// Who created the DeployRequest: required on create, equal to the authenticated user, immutable.
pub const REQUESTED_BY: &str = "slipway.dev/requested-by";

/// Who approved the DeployRequest: set (or changed) only by that user, and only when the user may
/// use [`APPROVE_VERB`] on `deployrequests.slipway.dev` in the request's namespace. Removing it
/// withdraws the approval.
pub const APPROVED_BY: &str = "slipway.dev/approved-by";

/// The custom RBAC verb on `deployrequests` that lets a user approve (ClusterRole `slipway-approver`).
pub const APPROVE_VERB: &str = "approve";

/// The name and policy name of the ValidatingAdmissionPolicy and its binding.
pub const ADMISSION_POLICY: &str = "slipway-deployrequest-identity";

/// Label of a DeployRequest the controller made to heal an Environment's drift: the Environment's
/// UID. Only the controller creates DeployRequests owned by an Environment (the admission policy).
pub const DRIFT_HEAL_OF: &str = "slipway.dev/drift-heal-of";

/// Label of a DeployRequest the controller made for an Environment's `spec.revision`: the
/// Environment's UID (owned by it, like a drift heal).
pub const REVISION_OF: &str = "slipway.dev/revision-of";

/// Annotation of such a DeployRequest: the declared revision it was made for (`tag v1.1.0`).
pub const DESIRED_REVISION: &str = "slipway.dev/desired-revision";

/// Annotation of an Environment: a new value makes the controller look up `spec.revision` at
/// once (and try again a revision whose DeployRequest failed). Copied to the DeployRequests made.
pub const REFRESH: &str = "slipway.dev/refresh";
