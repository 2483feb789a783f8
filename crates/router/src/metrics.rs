//! The router's Prometheus metrics, `GET /metrics` on a host that is not routed (like
//! `/healthz`): requests by route and status class, their latency by route, how long
//! a change takes from its event to the published table, and the size of the table.
//! Names and meanings are listed in `docs/metrics.md`.
//!
//! The request path costs a clock read and a few relaxed atomic additions: each route's
//! counters ([`RouteStats`]) hang off its entry in the routing table, so a request finds
//! them with the pool it was routed to, with no lookup and no allocation. They carry
//! over when the route's endpoints change and go when the route does. The exposition
//! is built at scrape time from the table as it is then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::table::Live;

/// The content type of the Prometheus text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label of requests for hosts no LRP is routed at, and of the router's own
/// answers (`/healthz`, `/metrics`).
const UNROUTED: &str = "unrouted";

/// Upper bounds of the request latency buckets, in microseconds (0.1 ms to 10 s).
const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The counters of one route, shared by every table that holds the route.
#[derive(Debug, Default)]
pub(crate) struct RouteStats {
    /// Requests answered by status class: 1xx to 5xx.
    classes: [AtomicU64; 5],
    /// Requests by latency bucket ([`BOUNDS_US`]), and past the last bound.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl RouteStats {
    /// One request answered with `status` after `took`.
    pub(crate) fn observe(&self, status: StatusCode, took: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// What the router measures outside the routing table.
#[derive(Debug)]
pub(crate) struct RouterMetrics {
    /// Requests for hosts that are not routed.
    pub unrouted: RouteStats,
    /// From a change's event timestamp to the table that holds it being published.
    propagation: Histogram,
    publishes: Counter,
}

impl Default for RouterMetrics {
    fn default() -> RouterMetrics {
        RouterMetrics {
            unrouted: RouteStats::default(),
            propagation: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            publishes: Counter::default(),
        }
    }
}

impl RouterMetrics {
    /// A table was published holding changes whose events were stamped `ages` ago.
    pub(crate) fn published(&self, ages: impl Iterator<Item = Duration>) {
        self.publishes.inc();
        for age in ages {
            self.propagation.observe(age.as_secs_f64());
        }
    }

    /// The exposition, from `live` (the table now) and the counters.
    pub(crate) fn encode(&self, live: &Live) -> String {
        let mut registry = Registry::with_prefix("corral");
        let mut routes: Vec<(String, RouteSnapshot)> = live
            .http
            .iter()
            .map(|(host, pool)| (host.into_owned(), RouteSnapshot::of(&pool.stats)))
            .collect();
        routes.push((UNROUTED.to_owned(), RouteSnapshot::of(&self.unrouted)));
        registry.register_collector(Box::new(Routes(routes)));
        registry.register_with_unit(
            "router_route_propagation",
            "Time from the event of a change to an LRP or instance to the router publishing a table that holds it (clocks of server and router compared)",
            Unit::Seconds,
            self.propagation.clone(),
        );
        registry.register(
            "router_table_publishes",
            "Routing tables published (one per batch of changes that altered routing)",
            self.publishes.clone(),
        );
        let http = Gauge::<i64>::default();
        http.set(i64::try_from(live.http.len()).unwrap_or(i64::MAX));
        registry.register("router_http_routes", "Hostnames in the routing table", http);
        let tcp = Gauge::<i64>::default();
        tcp.set(i64::try_from(live.tcp.len()).unwrap_or(i64::MAX));
        registry.register(
            "router_tcp_routes",
            "External TCP ports in the routing table",
            tcp,
        );
        let endpoints = Gauge::<i64>::default();
        let count: usize = live.http.iter().map(|(_, p)| p.backends.len()).sum();
        endpoints.set(i64::try_from(count).unwrap_or(i64::MAX));
        registry.register(
            "router_http_endpoints",
            "Endpoints (running instances' addresses) over every hostname of the routing table",
            endpoints,
        );
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// One route's counters as read at scrape time.
#[derive(Debug)]
struct RouteSnapshot {
    classes: [u64; 5],
    buckets: [u64; BOUNDS_US.len() + 1],
    sum_us: u64,
}

impl RouteSnapshot {
    fn of(stats: &RouteStats) -> RouteSnapshot {
        RouteSnapshot {
            classes: std::array::from_fn(|i| stats.classes[i].load(Ordering::Relaxed)),
            buckets: std::array::from_fn(|i| stats.buckets[i].load(Ordering::Relaxed)),
            sum_us: stats.sum_us.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteCodeLabels {
    route: String,
    code: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every route's requests and latency, as read at scrape time.
#[derive(Debug)]
struct Routes(Vec<(String, RouteSnapshot)>);

impl prometheus_client::collector::Collector for Routes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut requests = encoder.encode_descriptor(
                "router_requests",
                "HTTP requests answered, by route (hostname, or unrouted) and status class",
                None,
                MetricType::Counter,
            )?;
            for (route, snapshot) in &self.0 {
                for (class, n) in CLASSES.iter().zip(snapshot.classes) {
                    if n == 0 {
                        continue;
                    }
                    let labels = RouteCodeLabels {
                        route: route.clone(),
                        code: class,
                    };
                    let counter = Counter::<u64>::default();
                    counter.inc_by(n);
                    counter.encode(requests.encode_family(&labels)?)?;
                }
            }
        }
        let unit = Unit::Seconds;
        let mut latency = encoder.encode_descriptor(
            "router_request_duration",
            "Time from a request's arrival to its response's head, by route",
            Some(&unit),
            MetricType::Histogram,
        )?;
        for (route, snapshot) in &self.0 {
            let count: u64 = snapshot.buckets.iter().sum();
            if count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = BOUNDS_US
                .iter()
                .zip(snapshot.buckets)
                .map(|(bound, n)| (*bound as f64 / 1e6, n))
                .collect();
            let labels = RouteLabels {
                route: route.clone(),
            };
            latency
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    snapshot.sum_us as f64 / 1e6,
                    count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_class_and_bucket() {
        let stats = RouteStats::default();
        stats.observe(StatusCode::OK, Duration::from_micros(80));
        stats.observe(StatusCode::NOT_FOUND, Duration::from_micros(100));
        stats.observe(StatusCode::BAD_GATEWAY, Duration::from_millis(3));
        stats.observe(StatusCode::OK, Duration::from_secs(60));
        let s = RouteSnapshot::of(&stats);
        assert_eq!(s.classes, [0, 2, 0, 1, 1]);
        assert_eq!(s.buckets[0], 2, "up to and including 100 us");
        assert_eq!(s.buckets[5], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(s.buckets[BOUNDS_US.len()], 1, "past the last bound");
        assert_eq!(s.sum_us, 80 + 100 + 3_000 + 60_000_000);
    }

    #[test]
    fn the_exposition_has_the_unrouted_requests() {
        let metrics = RouterMetrics::default();
        metrics
            .unrouted
            .observe(StatusCode::NOT_FOUND, Duration::from_micros(300));
        metrics.published([Duration::from_millis(5)].into_iter());
        let text = metrics.encode(&Live::default());
        for line in [
            "# TYPE corral_router_requests_total counter",
            r#"corral_router_requests_total{route="unrouted",code="4xx"} 1"#,
            r#"corral_router_request_duration_seconds_bucket{route="unrouted",le="0.0005"} 1"#,
            r#"corral_router_request_duration_seconds_count{route="unrouted"} 1"#,
            "corral_router_route_propagation_seconds_count 1",
            "corral_router_table_publishes_total 1",
            "corral_router_http_routes 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
