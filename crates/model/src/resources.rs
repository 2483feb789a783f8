//! The resources one container asks for.

use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, limits};

/// What one container of an LRP or a task reserves on its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Relative CPU share, 1-100 (Diego's `cpu_weight`).
    pub cpu_weight: u8,
    /// Most processes the container may hold; 0 means the cell's default.
    pub max_pids: u32,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            memory_mb: 128,
            disk_mb: 1024,
            cpu_weight: 10,
            max_pids: 1024,
        }
    }
}

impl Resources {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.memory_mb == 0 || self.memory_mb > limits::MEMORY_MB {
            return Err(ValidationError::new(
                "memory_mb",
                format!("must be between 1 and {}", limits::MEMORY_MB),
            ));
        }
        if self.disk_mb > limits::DISK_MB {
            return Err(ValidationError::new(
                "disk_mb",
                format!("must be at most {}", limits::DISK_MB),
            ));
        }
        if !(1..=100).contains(&self.cpu_weight) {
            return Err(ValidationError::new(
                "cpu_weight",
                "must be between 1 and 100",
            ));
        }
        if self.max_pids > limits::MAX_PIDS {
            return Err(ValidationError::new(
                "max_pids",
                format!("must be at most {}", limits::MAX_PIDS),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let ok = Resources::default();
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (Resources { memory_mb: 0, ..ok }, "memory_mb"),
            (
                Resources {
                    memory_mb: limits::MEMORY_MB + 1,
                    ..ok
                },
                "memory_mb",
            ),
            (
                Resources {
                    disk_mb: limits::DISK_MB + 1,
                    ..ok
                },
                "disk_mb",
            ),
            (
                Resources {
                    cpu_weight: 0,
                    ..ok
                },
                "cpu_weight",
            ),
            (
                Resources {
                    cpu_weight: 101,
                    ..ok
                },
                "cpu_weight",
            ),
            (
                Resources {
                    max_pids: limits::MAX_PIDS + 1,
                    ..ok
                },
                "max_pids",
            ),
        ];
        for (resources, field) in cases {
            assert_eq!(
                resources.validate().unwrap_err().field,
                field,
                "{resources:?}"
            );
        }
    }
}
