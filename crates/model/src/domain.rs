//! Domains: freshness namespaces for LRPs.

use serde::{Deserialize, Serialize};

use crate::{Name, Timestamp};

/// A domain is fresh while its owner keeps upserting it. Convergence removes extra or
/// orphaned instances only in fresh domains, so a client that stops syncing cannot
/// make Corral tear down its work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub name: Name,
    /// `None` means fresh forever (an upsert with TTL 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl Domain {
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness() {
        let name = Name::parse("domain", "cf").unwrap();
        let forever = Domain {
            name: name.clone(),
            expires_at: None,
        };
        let until_10 = Domain {
            name,
            expires_at: Some(Timestamp(10)),
        };
        assert!(forever.is_fresh(Timestamp(u64::MAX)));
        assert!(until_10.is_fresh(Timestamp(9)));
        assert!(!until_10.is_fresh(Timestamp(10)));
    }
}
