//! What the agent writes down about each container, so that an agent started after a
//! crash knows what the containers it finds in the runtime helper are.

use std::path::{Path, PathBuf};

use model::{Lrp, Task};
use runtime::{ContainerInfo, ProcessId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) work: Kind,
    /// Set once the container exists.
    #[serde(default)]
    pub(crate) info: Option<ContainerInfo>,
    /// Processes of the main action (not setup): the instance lives while they do.
    #[serde(default)]
    pub(crate) processes: Vec<ProcessId>,
    /// The instance passed its startup and was reported RUNNING.
    #[serde(default)]
    pub(crate) running: bool,
    /// The digests of the image layers the container runs on, kept from eviction
    /// while this record exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) image_layers: Vec<String>,
    /// Who an exec session runs as and where, when not the container's defaults: the
    /// user and directory of the app's main process (as `docker exec` takes the
    /// image's USER and WorkingDir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exec_as: Option<ExecAs>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecAs {
    pub(crate) user: Option<String>,
    pub(crate) dir: Option<String>,
}

impl ExecAs {
    /// What an exec session into a container running `action` (resolved against its
    /// image) inherits from its first run.
    pub(crate) fn of(action: &model::Action) -> Option<ExecAs> {
        let run = action.first_run()?;
        (run.user.is_some() || run.dir.is_some()).then(|| ExecAs {
            user: run.user.clone(),
            dir: run.dir.clone(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Kind {
    Instance {
        lrp: Box<Lrp>,
        index: u32,
        instance_id: String,
    },
    Task {
        task: Box<Task>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Records {
    dir: PathBuf,
}

impl Records {
    pub(crate) fn new(dir: &Path) -> anyhow::Result<Records> {
        std::fs::create_dir_all(dir)?;
        Ok(Records {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, container: &str) -> PathBuf {
        self.dir.join(format!("{container}.json"))
    }

    /// Writes through a temporary file and a rename, so a crash never leaves half a
    /// record.
    pub(crate) fn save(&self, container: &str, record: &Record) {
        let path = self.path(container);
        let partial = path.with_extension("partial");
        let bytes = serde_json::to_vec(record).expect("records always serialise");
        let written =
            std::fs::write(&partial, bytes).and_then(|()| std::fs::rename(&partial, &path));
        if let Err(e) = written {
            tracing::warn!(%container, "could not write the container's record: {e}");
        }
    }

    pub(crate) fn load(&self, container: &str) -> Option<Record> {
        let bytes = std::fs::read(self.path(container)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(crate) fn remove(&self, container: &str) {
        let _ = std::fs::remove_file(self.path(container));
    }

    /// Containers with a record but which the runtime no longer holds.
    pub(crate) fn all(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// The container id for a task (see [`api::task_container_id`]).
pub(crate) fn task_container(id: &str) -> String {
    api::task_container_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_containers_are_valid_and_distinct() {
        let a = task_container("Build_1");
        let b = task_container("build-1");
        assert_ne!(a, b);
        for id in [&a, &b, &task_container(&"x".repeat(128))] {
            runtime::check_container_id(id).unwrap();
        }
    }
}
