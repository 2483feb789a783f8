//! The table: the LRPs and instances as last seen, and the routing derived from them,
//! kept up to date change by change.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use model::{Generation, Instance, InstanceState, Lrp, Name, Presence};

use crate::host::HostMap;

/// One change to the rows the table follows, as the event stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Boxed: an LRP is several times larger than the other changes.
    LrpUpserted(Box<Lrp>),
    LrpRemoved {
        name: Name,
    },
    InstanceUpserted(Instance),
    InstanceRemoved {
        lrp: Name,
        index: u32,
        presence: Presence,
    },
}

/// Which instance row an endpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceRef {
    pub lrp: Name,
    pub index: u32,
    pub presence: Presence,
}

/// Where traffic goes: an instance's address and the host port mapped to the route's
/// container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub instance: InstanceRef,
    pub addr: SocketAddr,
}

/// What serves one hostname or TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    /// The LRPs routed here, by name: what a router names when no instance serves.
    pub lrps: Vec<Name>,
    /// Ordered by instance (LRP, index, presence), one per address.
    pub endpoints: Vec<Endpoint>,
}

/// The routing a table derives: HTTP hostnames and TCP ports, each with its backends.
/// A hostname or port is here while some LRP routes it, even with no endpoint (a
/// router answers 503 then, not 404). Cheap to clone: the backends are shared, and a
/// change replaces only the backends it affects, so a router can tell unchanged ones
/// by pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    http: HostMap<Arc<Backends>>,
    tcp: BTreeMap<u16, Arc<Backends>>,
}

impl Routing {
    pub fn http(&self) -> &HostMap<Arc<Backends>> {
        &self.http
    }

    pub fn tcp(&self) -> &BTreeMap<u16, Arc<Backends>> {
        &self.tcp
    }
}

/// The rows the routing comes from, and the routing, updated incrementally.
///
/// Ordering: every row remembers what set it. A change from the event stream carries
/// its sequence number and applies only when it is newer than the row's last change,
/// so a repeated or late event is ignored; a removal leaves a tombstone with its
/// sequence number for the same reason. A row from a listing ([`Table::rebuild`]) has
/// no sequence number: the listing was read after the stream was subscribed to, so
/// events buffered meanwhile may be older than it. For such a row, an upsert of the
/// same or an older generation is ignored (and the row remembers that event, so that
/// it is not taken for newer when delivered again); a removal always applies, since generations start again at 1 when a row
/// is created anew. Applying a listing and then the stream's events in order therefore
/// ends at the state of the log, whichever of them the listing already reflected.
#[derive(Debug, Clone, Default)]
pub struct Table {
    lrps: HashMap<Name, Slot<Lrp>>,
    instances: HashMap<Name, BTreeMap<(u32, Presence), Slot<Instance>>>,
    /// Where each LRP is routed now: lowercase hostnames and TCP ports.
    routed: HashMap<Name, Routed>,
    /// The live LRPs that route each hostname and TCP port.
    by_hostname: HashMap<String, BTreeSet<Name>>,
    by_port: BTreeMap<u16, BTreeSet<Name>>,
    routing: Routing,
    /// Rows that are tombstones now or were when last removed.
    removed: Vec<RowKey>,
}

#[derive(Debug, Clone)]
struct Slot<T> {
    version: Version,
    /// `None`: removed.
    row: Option<T>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// Read from a listing: newer than the subscription, at an unknown place in the
    /// log; newer than the event `after` too, if one was found older than it.
    Listed { after: Option<u64> },
    /// Set by the event with this sequence number.
    Event(u64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Routed {
    hostnames: BTreeSet<String>,
    ports: BTreeSet<u16>,
}

#[derive(Debug, Clone)]
enum RowKey {
    Lrp(Name),
    Instance(Name, u32, Presence),
}

trait Row {
    fn generation(&self) -> Generation;
}

impl Row for Lrp {
    fn generation(&self) -> Generation {
        self.generation
    }
}

impl Row for Instance {
    fn generation(&self) -> Generation {
        self.generation
    }
}

impl Table {
    /// An empty table: nothing routed.
    pub fn new() -> Table {
        Table::default()
    }

    /// A table of a full listing: every LRP and every instance row.
    pub fn rebuild(
        lrps: impl IntoIterator<Item = Lrp>,
        instances: impl IntoIterator<Item = Instance>,
    ) -> Table {
        let mut table = Table::new();
        for lrp in lrps {
            let name = lrp.spec.name.clone();
            let slot = Slot {
                version: Version::Listed { after: None },
                row: Some(lrp),
            };
            table.lrps.insert(name, slot);
        }
        for instance in instances {
            table
                .instances
                .entry(instance.lrp.clone())
                .or_default()
                .insert(
                    (instance.index, instance.presence),
                    Slot {
                        version: Version::Listed { after: None },
                        row: Some(instance),
                    },
                );
        }
        let names: Vec<Name> = table.lrps.keys().cloned().collect();
        for name in names {
            table.reroute(&name);
        }
        table
    }

    /// Applies the change the event `seq` reports; whether the routing changed. A
    /// change older than what the table holds is ignored (see [`Table`]).
    pub fn apply(&mut self, seq: u64, change: Change) -> bool {
        match change {
            Change::LrpUpserted(lrp) => {
                let name = lrp.spec.name.clone();
                if !admit(self.lrps.get_mut(&name), seq, Some(lrp.generation)) {
                    return false;
                }
                self.lrps.insert(
                    name.clone(),
                    Slot {
                        version: Version::Event(seq),
                        row: Some(*lrp),
                    },
                );
                self.reroute(&name)
            }
            Change::LrpRemoved { name } => {
                if !admit(self.lrps.get_mut(&name), seq, None) {
                    return false;
                }
                self.lrps.insert(
                    name.clone(),
                    Slot {
                        version: Version::Event(seq),
                        row: None,
                    },
                );
                self.removed.push(RowKey::Lrp(name.clone()));
                self.reroute(&name)
            }
            Change::InstanceUpserted(instance) => {
                let lrp = instance.lrp.clone();
                let slots = self.instances.entry(lrp.clone()).or_default();
                let key = (instance.index, instance.presence);
                if !admit(slots.get_mut(&key), seq, Some(instance.generation)) {
                    return false;
                }
                let serves = serves(Some(&instance));
                let before = slots.insert(
                    key,
                    Slot {
                        version: Version::Event(seq),
                        row: Some(instance),
                    },
                );
                let served = serves_slot(before.as_ref());
                (serves || served) && self.reroute(&lrp)
            }
            Change::InstanceRemoved {
                lrp,
                index,
                presence,
            } => {
                let slots = self.instances.entry(lrp.clone()).or_default();
                let key = (index, presence);
                if !admit(slots.get_mut(&key), seq, None) {
                    return false;
                }
                let before = slots.insert(
                    key,
                    Slot {
                        version: Version::Event(seq),
                        row: None,
                    },
                );
                self.removed
                    .push(RowKey::Instance(lrp.clone(), index, presence));
                serves_slot(before.as_ref()) && self.reroute(&lrp)
            }
        }
    }

    /// Drops the tombstones of removed rows. They only guard against events that
    /// arrive out of order; a reader of the event stream, which delivers events in
    /// order, may drop them after every batch to keep memory bounded.
    pub fn forget_removed(&mut self) {
        for key in self.removed.drain(..) {
            match key {
                RowKey::Lrp(name) => {
                    if self.lrps.get(&name).is_some_and(|s| s.row.is_none()) {
                        self.lrps.remove(&name);
                    }
                }
                RowKey::Instance(lrp, index, presence) => {
                    if let Some(slots) = self.instances.get_mut(&lrp) {
                        if slots
                            .get(&(index, presence))
                            .is_some_and(|s| s.row.is_none())
                        {
                            slots.remove(&(index, presence));
                        }
                        if slots.is_empty() {
                            self.instances.remove(&lrp);
                        }
                    }
                }
            }
        }
    }

    /// The routing, as of the last change.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// The LRPs the table holds (not removed), in no order.
    pub fn lrps(&self) -> impl Iterator<Item = &Lrp> {
        self.lrps.values().filter_map(|s| s.row.as_ref())
    }

    /// The instance rows the table holds (not removed), in no order.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances
            .values()
            .flat_map(|slots| slots.values())
            .filter_map(|s| s.row.as_ref())
    }

    /// Recomputes where the LRP `name` is routed and the backends of every hostname
    /// and port it was or is routed to; whether the routing changed.
    fn reroute(&mut self, name: &Name) -> bool {
        let now = match self.live_lrp(name) {
            Some(lrp) => Routed {
                hostnames: lrp
                    .spec
                    .routes
                    .http
                    .iter()
                    .map(|r| r.hostname.to_ascii_lowercase())
                    .collect(),
                ports: lrp
                    .spec
                    .routes
                    .tcp
                    .iter()
                    .map(|r| r.external_port)
                    .collect(),
            },
            None => Routed::default(),
        };
        let before = self.routed.remove(name).unwrap_or_default();
        for hostname in before.hostnames.difference(&now.hostnames) {
            if let Some(lrps) = self.by_hostname.get_mut(hostname) {
                lrps.remove(name);
                if lrps.is_empty() {
                    self.by_hostname.remove(hostname);
                }
            }
        }
        for hostname in now.hostnames.difference(&before.hostnames) {
            self.by_hostname
                .entry(hostname.clone())
                .or_default()
                .insert(name.clone());
        }
        for port in before.ports.difference(&now.ports) {
            if let Some(lrps) = self.by_port.get_mut(port) {
                lrps.remove(name);
                if lrps.is_empty() {
                    self.by_port.remove(port);
                }
            }
        }
        for port in now.ports.difference(&before.ports) {
            self.by_port.entry(*port).or_default().insert(name.clone());
        }
        let mut changed = false;
        for hostname in before.hostnames.union(&now.hostnames) {
            changed |= self.refresh_hostname(hostname);
        }
        for port in before.ports.union(&now.ports) {
            changed |= self.refresh_port(*port);
        }
        if now != Routed::default() {
            self.routed.insert(name.clone(), now);
        }
        changed
    }

    fn refresh_hostname(&mut self, hostname: &str) -> bool {
        let backends = self.by_hostname.get(hostname).map(|lrps| {
            let mut endpoints = Vec::new();
            for name in lrps {
                let Some(lrp) = self.live_lrp(name) else {
                    continue;
                };
                for route in &lrp.spec.routes.http {
                    if route.hostname.eq_ignore_ascii_case(hostname) {
                        endpoints.extend(self.endpoints(name, route.port));
                    }
                }
            }
            backends(lrps, endpoints)
        });
        let current = self.routing.http.get(hostname);
        match (current, backends) {
            (Some(current), Some(new)) if **current == new => false,
            (_, Some(new)) => {
                self.routing.http.insert(hostname, Arc::new(new));
                true
            }
            (Some(_), None) => {
                self.routing.http.remove(hostname);
                true
            }
            (None, None) => false,
        }
    }

    fn refresh_port(&mut self, port: u16) -> bool {
        let backends = self.by_port.get(&port).map(|lrps| {
            let mut endpoints = Vec::new();
            for name in lrps {
                let Some(lrp) = self.live_lrp(name) else {
                    continue;
                };
                for route in &lrp.spec.routes.tcp {
                    if route.external_port == port {
                        endpoints.extend(self.endpoints(name, route.container_port));
                    }
                }
            }
            backends(lrps, endpoints)
        });
        let current = self.routing.tcp.get(&port);
        match (current, backends) {
            (Some(current), Some(new)) if **current == new => false,
            (_, Some(new)) => {
                self.routing.tcp.insert(port, Arc::new(new));
                true
            }
            (Some(_), None) => {
                self.routing.tcp.remove(&port);
                true
            }
            (None, None) => false,
        }
    }

    fn live_lrp(&self, name: &Name) -> Option<&Lrp> {
        self.lrps.get(name).and_then(|s| s.row.as_ref())
    }

    /// The endpoints of the LRP's serving instances for `container_port`.
    fn endpoints<'a>(
        &'a self,
        name: &'a Name,
        container_port: u16,
    ) -> impl Iterator<Item = Endpoint> + 'a {
        self.instances
            .get(name)
            .into_iter()
            .flat_map(|slots| slots.values())
            .filter_map(move |slot| {
                let instance = slot.row.as_ref().filter(|i| serves(Some(i)))?;
                let ip: IpAddr = instance.address.as_deref()?.parse().ok()?;
                let mapping = instance
                    .ports
                    .iter()
                    .find(|p| p.container_port == container_port)?;
                Some(Endpoint {
                    instance: InstanceRef {
                        lrp: instance.lrp.clone(),
                        index: instance.index,
                        presence: instance.presence,
                    },
                    addr: SocketAddr::new(ip, mapping.host_port),
                })
            })
    }
}

/// Whether a change is newer than what `slot` holds (see [`Table`]). A listed row
/// that an upsert is not newer than remembers the upsert's place in the log, so that
/// the same event delivered again is known as old, and keeps its generation guard.
fn admit<T: Row>(slot: Option<&mut Slot<T>>, seq: u64, generation: Option<Generation>) -> bool {
    let Some(slot) = slot else {
        return true;
    };
    match slot.version {
        Version::Event(at) => seq > at,
        Version::Listed { after } => {
            if after.is_some_and(|after| seq <= after) {
                return false;
            }
            match (&slot.row, generation) {
                (Some(row), Some(generation)) if generation <= row.generation() => {
                    slot.version = Version::Listed { after: Some(seq) };
                    false
                }
                _ => true,
            }
        }
    }
}

/// Whether an instance row may get traffic: RUNNING and ready, in any presence.
fn serves(instance: Option<&Instance>) -> bool {
    instance.is_some_and(|i| i.state == InstanceState::Running && i.routable)
}

fn serves_slot(slot: Option<&Slot<Instance>>) -> bool {
    serves(slot.and_then(|s| s.row.as_ref()))
}

/// Backends in their stable order, one endpoint per address (two rows naming the same
/// address and port are one destination).
fn backends(lrps: &BTreeSet<Name>, mut endpoints: Vec<Endpoint>) -> Backends {
    endpoints.sort();
    let mut seen = HashSet::new();
    endpoints.retain(|e| seen.insert(e.addr));
    Backends {
        lrps: lrps.iter().cloned().collect(),
        endpoints,
    }
}
