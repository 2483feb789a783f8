//! Image pulls in progress, as cells report them: kept in this server's memory only
//! (they change several times a second and mean nothing once the instance runs), and
//! shown by `GET /v1/lrps/{name}/status` for instances still CLAIMED by the container
//! that reported them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::Pulling;
use model::{Instance, InstanceState, Name};

/// A report older than this is a pull that ended without a word (the cell went away).
const STALE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct Pulls {
    by_instance: Mutex<HashMap<(Name, u32), (Pulling, Instant)>>,
}

impl Pulls {
    pub fn report(&self, lrp: &Name, pulling: Pulling) {
        let mut pulls = self.by_instance.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pulls.retain(|_, (_, at)| now.duration_since(*at) < STALE);
        pulls.insert((lrp.clone(), pulling.index), (pulling, now));
    }

    /// The pulls of `lrp`'s instances that are still waiting on them: CLAIMED by the
    /// container that reported, lately.
    pub fn of(&self, lrp: &Name, instances: &[Instance]) -> Vec<Pulling> {
        let pulls = self.by_instance.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        instances
            .iter()
            .filter(|i| i.state == InstanceState::Claimed)
            .filter_map(|i| {
                let (pulling, at) = pulls.get(&(lrp.clone(), i.index))?;
                let holder = i.key.as_ref()?;
                (holder.instance_id == pulling.instance_id && now.duration_since(*at) < STALE)
                    .then(|| pulling.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use model::{InstanceKey, Timestamp};

    use super::*;

    fn instance(index: u32, state: InstanceState, holder: &str) -> Instance {
        let name = Name::parse("lrp", "web").unwrap();
        let mut row = Instance::unclaimed(
            name,
            index,
            Name::parse("d", "default").unwrap(),
            Timestamp(0),
        );
        row.state = state;
        row.key = Some(InstanceKey {
            instance_id: holder.to_owned(),
            cell_id: Name::parse("cell", "c").unwrap(),
        });
        row
    }

    #[test]
    fn only_claimed_instances_of_the_reporting_container_show_a_pull() {
        let pulls = Pulls::default();
        let web = Name::parse("lrp", "web").unwrap();
        for (index, id) in [(0, "a"), (1, "b"), (2, "old")] {
            pulls.report(
                &web,
                Pulling {
                    index,
                    instance_id: id.to_owned(),
                    done_bytes: 5,
                    total_bytes: 10,
                },
            );
        }
        let rows = [
            instance(0, InstanceState::Claimed, "a"),
            instance(1, InstanceState::Running, "b"),
            instance(2, InstanceState::Claimed, "new"),
        ];
        let shown: Vec<u32> = pulls.of(&web, &rows).iter().map(|p| p.index).collect();
        assert_eq!(shown, [0]);
    }
}
