//! The table requests are routed by: each route's endpoints with what balancing needs.
//! Built from a [`routes::Routing`], immutable once published; a change publishes a new
//! one, reusing the pools of routes that did not change so their turn and their
//! in-flight counts carry on.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;
use routes::{Backends, HostMap, Routing};

use crate::Balance;
use crate::metrics::RouteStats;

/// What requests and connections are routed by.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub http: HostMap<Arc<Pool>>,
    pub tcp: BTreeMap<u16, Arc<Pool>>,
    /// Whether this was loaded from the server (false only before the first load).
    pub synced: bool,
}

/// The endpoints of one hostname or TCP port.
#[derive(Debug)]
pub(crate) struct Pool {
    /// The LRPs routed here, for messages: `web`, or `blue, green`.
    pub lrps: String,
    pub backends: Box<[Backend]>,
    /// Where the next turn starts.
    next: AtomicUsize,
    /// The route's request counters, kept by hostname across tables (unused for TCP).
    pub stats: Arc<RouteStats>,
}

/// One endpoint.
#[derive(Debug)]
pub(crate) struct Backend {
    pub addr: SocketAddr,
    /// `ip:port`, for upstream URIs.
    pub authority: Authority,
    /// `web/0`, for messages and the access log.
    pub instance: Arc<str>,
    /// Requests from this router in flight to this address, shared by every pool that
    /// holds it.
    pub in_flight: Arc<AtomicUsize>,
}

/// Most endpoints one request tries.
pub(crate) const MAX_TRIES: usize = 4;

/// The endpoints a request has tried, so a retry goes elsewhere.
#[derive(Debug, Default)]
pub(crate) struct Tried {
    addrs: [Option<SocketAddr>; MAX_TRIES],
    len: usize,
}

impl Tried {
    pub fn push(&mut self, addr: SocketAddr) {
        if self.len < MAX_TRIES {
            self.addrs[self.len] = Some(addr);
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn contains(&self, addr: SocketAddr) -> bool {
        self.addrs[..self.len].contains(&Some(addr))
    }
}

impl Pool {
    /// The endpoint for the next request or connection, skipping those tried; `None`
    /// when there is none left.
    pub fn pick(&self, balance: Balance, tried: &Tried) -> Option<&Backend> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        let candidates = (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .filter(|b| !tried.contains(b.addr));
        match balance {
            Balance::RoundRobin => candidates.into_iter().next(),
            // The first of the least loaded, from this turn's start: ties go round.
            Balance::LeastRequest => candidates.min_by_key(|b| b.in_flight.load(Ordering::Relaxed)),
        }
    }
}

/// Makes each published [`Live`] from the table's routing, keeping what did not change.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    routing: Routing,
    live: Arc<Live>,
    in_flight: HashMap<SocketAddr, Arc<AtomicUsize>>,
    /// Each hostname's request counters, handed from table to table.
    stats: HashMap<String, Arc<RouteStats>>,
}

impl Builder {
    pub fn build(&mut self, routing: &Routing) -> Arc<Live> {
        let mut live = Live {
            synced: true,
            ..Live::default()
        };
        for (hostname, backends) in routing.http().iter() {
            let unchanged = self
                .routing
                .http()
                .get(&hostname)
                .filter(|before| Arc::ptr_eq(before, backends))
                .and_then(|_| self.live.http.get(&hostname).cloned());
            let pool = unchanged.unwrap_or_else(|| {
                let stats = self.stats.entry(hostname.to_string()).or_default().clone();
                self.pool(backends, stats)
            });
            live.http.insert(&hostname, pool);
        }
        for (port, backends) in routing.tcp() {
            let unchanged = self
                .routing
                .tcp()
                .get(port)
                .filter(|before| Arc::ptr_eq(before, backends))
                .and_then(|_| self.live.tcp.get(port).cloned());
            let pool = unchanged.unwrap_or_else(|| self.pool(backends, Arc::default()));
            live.tcp.insert(*port, pool);
        }
        let live = Arc::new(live);
        self.routing = routing.clone();
        self.live = live.clone();
        // Counters no pool holds any more go; one a request still holds lives on with
        // it.
        self.in_flight
            .retain(|_, counter| Arc::strong_count(counter) > 1);
        // A route that went takes its counters with it.
        self.stats
            .retain(|hostname, _| self.live.http.get(hostname).is_some());
        live
    }

    fn pool(&mut self, backends: &Backends, stats: Arc<RouteStats>) -> Arc<Pool> {
        let lrps: Vec<&str> = backends.lrps.iter().map(|n| n.as_str()).collect();
        let backends = backends
            .endpoints
            .iter()
            .filter_map(|e| {
                let authority = Authority::try_from(e.addr.to_string()).ok()?;
                Some(Backend {
                    addr: e.addr,
                    authority,
                    instance: format!("{}/{}", e.instance.lrp, e.instance.index).into(),
                    in_flight: self.in_flight.entry(e.addr).or_default().clone(),
                })
            })
            .collect();
        Arc::new(Pool {
            lrps: lrps.join(", "),
            backends,
            next: AtomicUsize::new(0),
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addrs: &[u16]) -> Pool {
        Pool {
            lrps: "web".to_owned(),
            backends: addrs
                .iter()
                .map(|port| {
                    let addr = SocketAddr::from(([10, 0, 0, 1], *port));
                    Backend {
                        addr,
                        authority: Authority::try_from(addr.to_string()).unwrap(),
                        instance: format!("web/{port}").into(),
                        in_flight: Arc::default(),
                    }
                })
                .collect(),
            next: AtomicUsize::new(0),
            stats: Arc::default(),
        }
    }

    fn port(b: Option<&Backend>) -> Option<u16> {
        b.map(|b| b.addr.port())
    }

    #[test]
    fn round_robin_takes_turns_and_skips_what_was_tried() {
        let pool = pool(&[1, 2, 3]);
        let none = Tried::default();
        let turns: Vec<_> = (0..6)
            .map(|_| port(pool.pick(Balance::RoundRobin, &none)))
            .collect();
        assert_eq!(turns, [1, 2, 3, 1, 2, 3].map(Some));
        let mut tried = Tried::default();
        tried.push(pool.backends[0].addr);
        tried.push(pool.backends[1].addr);
        for _ in 0..3 {
            assert_eq!(port(pool.pick(Balance::RoundRobin, &tried)), Some(3));
        }
        tried.push(pool.backends[2].addr);
        assert_eq!(port(pool.pick(Balance::RoundRobin, &tried)), None);
    }

    #[test]
    fn least_request_prefers_the_idle() {
        let pool = pool(&[1, 2, 3]);
        pool.backends[0].in_flight.store(2, Ordering::Relaxed);
        pool.backends[1].in_flight.store(1, Ordering::Relaxed);
        let none = Tried::default();
        assert_eq!(port(pool.pick(Balance::LeastRequest, &none)), Some(3));
        pool.backends[2].in_flight.store(5, Ordering::Relaxed);
        assert_eq!(port(pool.pick(Balance::LeastRequest, &none)), Some(2));
        // Ties take turns.
        for b in pool.backends.iter() {
            b.in_flight.store(0, Ordering::Relaxed);
        }
        let mut seen: Vec<_> = (0..3)
            .filter_map(|_| port(pool.pick(Balance::LeastRequest, &none)))
            .collect();
        seen.sort();
        assert_eq!(seen, [1, 2, 3]);
    }
}
