//! Tasks: one-off work that runs at most once, and its state machine.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::lrp::{env_map, validate_tags};
use crate::validate::{ValidationError, check_env, check_len, limits};
use crate::{
    Action, Env, Generation, InvalidTransition, Name, RegistryCredentials, Resources, Rootfs,
    Timestamp,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub domain: Name,
    pub rootfs: Rootfs,
    /// The registry login for a `docker://` rootfs that needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_credentials: Option<RegistryCredentials>,
    pub resources: Resources,
    pub action: Action,
    #[serde(default, with = "env_map", skip_serializing_if = "Vec::is_empty")]
    pub env: Env,
    /// A file in the container whose contents become the task's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_file: Option<String>,
    /// Receives a POST with the task when it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Waiting for a cell.
    Pending,
    /// A cell started it. Reached only once: the at-most-once guarantee.
    Running,
    /// Finished, failed or cancelled; the result or failure reason is set.
    Completed,
    /// Someone is resolving it (reading the result, calling back) before deletion.
    Resolving,
}

/// The moves of the task state machine, named by what causes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskTransition {
    /// A cell starts the task (PENDING -> RUNNING, once).
    Start,
    /// A cell could not place it; it goes back to PENDING for another try.
    Reject,
    /// The task finished, failed, was cancelled or given up on.
    Complete,
    /// A resolver took it (COMPLETED -> RESOLVING).
    Resolve,
    /// A resolver took too long; it goes back to COMPLETED (convergence's kick).
    Unresolve,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: Name,
    #[serde(flatten)]
    pub spec: TaskSpec,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_id: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default)]
    pub failed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub rejection_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_completed_at: Option<Timestamp>,
    pub generation: Generation,
}

impl Task {
    /// The task as the API shows it: its registry password left out.
    pub fn redacted(&self) -> Task {
        let mut shown = self.clone();
        RegistryCredentials::redact(&mut shown.spec.image_credentials);
        shown
    }
}

impl TaskSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.resources
            .validate()
            .map_err(|e| e.within("resources"))?;
        self.action.validate().map_err(|e| e.within("action"))?;
        crate::lrp::image_only(&self.rootfs, None, &self.action)?;
        crate::lrp::check_credentials(&self.rootfs, self.image_credentials.as_ref())?;
        check_env("env", &self.env)?;
        if let Some(path) = &self.result_file {
            if !path.starts_with('/') {
                return Err(ValidationError::new(
                    "result_file",
                    "must be an absolute path",
                ));
            }
            check_len("result_file", path, limits::ACTION_STRING_BYTES)?;
        }
        if let Some(url) = &self.completion_callback_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ValidationError::new(
                    "completion_callback_url",
                    "must be an http:// or https:// URL",
                ));
            }
            check_len("completion_callback_url", url, limits::ACTION_STRING_BYTES)?;
        }
        validate_tags("placement_tags", &self.placement_tags)?;
        check_len("annotation", &self.annotation, limits::ANNOTATION_BYTES)
    }
}

impl TaskState {
    /// The state after `transition`, or why it is not allowed from here.
    pub fn apply(self, transition: TaskTransition) -> Result<TaskState, InvalidTransition> {
        use TaskState::*;
        use TaskTransition::*;
        let next = match (self, transition) {
            (Pending, Start) => Some(Running),
            (Pending, Reject) => Some(Pending),
            (Pending | Running, Complete) => Some(Completed),
            (Completed, Resolve) => Some(Resolving),
            (Resolving, Unresolve) => Some(Completed),
            _ => None,
        };
        next.ok_or_else(|| InvalidTransition {
            what: "task",
            from: self.to_string(),
            to: format!("{transition:?}"),
        })
    }

    /// Only finished tasks may be deleted.
    pub fn deletable(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Resolving)
    }
}

impl Task {
    pub fn new(id: Name, spec: TaskSpec, now: Timestamp) -> Task {
        Task {
            id,
            spec,
            state: TaskState::Pending,
            cell_id: None,
            result: None,
            failed: false,
            failure_reason: None,
            rejection_count: 0,
            rejection_reason: None,
            created_at: now,
            updated_at: now,
            first_completed_at: None,
            generation: 0,
        }
    }

    /// This task completed as failed with `reason` (cancellation, giving up), if the
    /// state machine allows it from where it is.
    pub fn failed_with(&self, reason: &str, now: Timestamp) -> Result<Task, InvalidTransition> {
        let mut next = self.clone();
        next.state = self.state.apply(TaskTransition::Complete)?;
        next.failed = true;
        next.failure_reason = Some(truncate(reason, limits::REASON_BYTES));
        next.updated_at = now;
        next.first_completed_at.get_or_insert(now);
        Ok(next)
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskState::Pending => "PENDING",
            TaskState::Running => "RUNNING",
            TaskState::Completed => "COMPLETED",
            TaskState::Resolving => "RESOLVING",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;
    use TaskTransition::*;

    #[test]
    fn state_table() {
        let states = [Pending, Running, Completed, Resolving];
        let transitions = [Start, Reject, Complete, Resolve, Unresolve];
        let allowed = [
            (Pending, Start, Running),
            (Pending, Reject, Pending),
            (Pending, Complete, Completed),
            (Running, Complete, Completed),
            (Completed, Resolve, Resolving),
            (Resolving, Unresolve, Completed),
        ];
        for from in states {
            for t in transitions {
                let expect = allowed
                    .iter()
                    .find(|(f, tt, _)| *f == from && *tt == t)
                    .map(|(_, _, to)| *to);
                assert_eq!(from.apply(t).ok(), expect, "{from} {t:?}");
            }
        }
    }

    #[test]
    fn a_task_starts_at_most_once() {
        // Whatever sequence of transitions happens, Start succeeds at most once.
        use proptest::prelude::*;
        let transition = prop_oneof![
            Just(Start),
            Just(Reject),
            Just(Complete),
            Just(Resolve),
            Just(Unresolve)
        ];
        proptest!(|(seq in proptest::collection::vec(transition, 0..40))| {
            let mut state = Pending;
            let mut starts = 0;
            for t in seq {
                if let Ok(next) = state.apply(t) {
                    if t == Start { starts += 1; }
                    state = next;
                }
            }
            prop_assert!(starts <= 1);
        });
    }

    #[test]
    fn deletable() {
        assert_eq!(
            states_where(TaskState::deletable),
            vec![Completed, Resolving]
        );
    }

    fn states_where(f: fn(TaskState) -> bool) -> Vec<TaskState> {
        [Pending, Running, Completed, Resolving]
            .into_iter()
            .filter(|s| f(*s))
            .collect()
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
