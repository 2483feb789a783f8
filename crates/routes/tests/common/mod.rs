//! Test fixtures for the routing table: changes written as a few lines of text, builders
//! for their rows, and the routing rendered as text.
//!
//! The fixture language, one change per line, each with the next sequence number (`#`
//! starts a comment; `seq=N` on a line sets its sequence number instead):
//!
//! ```text
//! lrp web http=web.test:8080,*.apps.test:8080 tcp=5000:9000 gen=1  # upsert an LRP
//! web/0 running 10.0.0.1 8080:61000 gen=2     # upsert an instance: lrp/index, then
//!                                             #   [evacuating|suspect] state [address]
//!                                             #   [container:host ...] [unready] gen=G
//! -web/0                                      # remove an instance ([evacuating|suspect])
//! -lrp web                                    # remove an LRP
//! ```

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use model::{
    Action, Checks, CrashPolicy, HttpRoute, Instance, InstanceKey, InstanceState, Lrp, LrpSpec,
    Name, PortMapping, Presence, Resources, Rootfs, Routes, TcpRoute, Timestamp,
};
use routes::{Change, Routing, Table};

pub fn name(s: &str) -> Name {
    Name::parse("name", s).expect("a valid name")
}

/// An LRP with these routes; its ports are the routes' container ports.
pub fn lrp(lrp_name: &str, http: &[(&str, u16)], tcp: &[(u16, u16)], generation: u64) -> Lrp {
    let mut ports: Vec<u16> = http
        .iter()
        .map(|(_, p)| *p)
        .chain(tcp.iter().map(|(_, p)| *p))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Lrp {
        spec: LrpSpec {
            image_credentials: None,
            name: name(lrp_name),
            domain: name("default"),
            rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("valid rootfs"),
            instances: 1,
            resources: Resources::default(),
            setup: None,
            action: Action::run("sleep", ["1000"]),
            env: Vec::new(),
            ports,
            checks: Checks::default(),
            routes: Routes {
                http: http
                    .iter()
                    .map(|(hostname, port)| HttpRoute {
                        hostname: (*hostname).to_owned(),
                        port: *port,
                    })
                    .collect(),
                tcp: tcp
                    .iter()
                    .map(|(external_port, container_port)| TcpRoute {
                        external_port: *external_port,
                        container_port: *container_port,
                    })
                    .collect(),
            },
            placement_tags: Vec::new(),
            crash_policy: CrashPolicy::default(),
            annotation: String::new(),
        },
        generation,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    }
}

/// An instance row; placed (with a key) unless UNCLAIMED.
#[allow(clippy::too_many_arguments)]
pub fn instance(
    lrp: &str,
    index: u32,
    presence: Presence,
    state: InstanceState,
    address: Option<&str>,
    ports: &[(u16, u16)],
    routable: bool,
    generation: u64,
) -> Instance {
    let mut row = Instance::unclaimed(name(lrp), index, name("default"), Timestamp(0));
    row.presence = presence;
    row.state = state;
    if state != InstanceState::Unclaimed {
        row.key = Some(InstanceKey {
            instance_id: format!("{lrp}-{index}"),
            cell_id: name("cell"),
        });
    }
    row.address = address.map(str::to_owned);
    row.ports = ports
        .iter()
        .map(|(container_port, host_port)| PortMapping {
            container_port: *container_port,
            host_port: *host_port,
        })
        .collect();
    row.routable = routable;
    row.generation = generation;
    row
}

fn mapping(word: &str) -> Option<(u16, u16)> {
    let (a, b) = word.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses the fixture language above into changes with their sequence numbers.
pub fn parse(text: &str) -> Vec<(u64, Change)> {
    let mut changes = Vec::new();
    let mut seq = 0;
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words: Vec<&str> = line.split_whitespace().collect();
        seq += 1;
        if let Some(i) = words.iter().position(|w| w.starts_with("seq=")) {
            seq = words.remove(i)["seq=".len()..].parse().expect("seq=N");
        }
        let mut generation = 1;
        if let Some(i) = words.iter().position(|w| w.starts_with("gen=")) {
            generation = words.remove(i)["gen=".len()..].parse().expect("gen=N");
        }
        let change = match words.as_slice() {
            ["lrp", lrp_name, rest @ ..] => {
                let mut http = Vec::new();
                let mut tcp = Vec::new();
                for word in rest {
                    if let Some(list) = word.strip_prefix("http=") {
                        for route in list.split(',') {
                            let (host, port) = route.rsplit_once(':').expect("HOST:PORT");
                            http.push((host, port.parse().expect("a port")));
                        }
                    } else if let Some(list) = word.strip_prefix("tcp=") {
                        for route in list.split(',') {
                            tcp.push(mapping(route).expect("EXTERNAL:CONTAINER"));
                        }
                    } else {
                        panic!("unknown word {word:?} in {raw:?}");
                    }
                }
                Change::LrpUpserted(Box::new(lrp(lrp_name, &http, &tcp, generation)))
            }
            ["-lrp", lrp_name] => Change::LrpRemoved {
                name: name(lrp_name),
            },
            [target, rest @ ..] => {
                let (removal, target) = match target.strip_prefix('-') {
                    Some(target) => (true, target),
                    None => (false, *target),
                };
                let (lrp_name, index) = target.split_once('/').expect("LRP/INDEX");
                let index: u32 = index.parse().expect("an index");
                let mut rest = rest.iter().copied().peekable();
                let presence = match rest.peek() {
                    Some(&"evacuating") => Presence::Evacuating,
                    Some(&"suspect") => Presence::Suspect,
                    _ => Presence::Ordinary,
                };
                if presence != Presence::Ordinary {
                    rest.next();
                }
                if removal {
                    Change::InstanceRemoved {
                        lrp: name(lrp_name),
                        index,
                        presence,
                    }
                } else {
                    let state = match rest.next() {
                        Some("unclaimed") => InstanceState::Unclaimed,
                        Some("claimed") => InstanceState::Claimed,
                        Some("running") => InstanceState::Running,
                        Some("crashed") => InstanceState::Crashed,
                        other => panic!("unknown state {other:?} in {raw:?}"),
                    };
                    let mut address = None;
                    let mut ports = Vec::new();
                    let mut routable = true;
                    for word in rest {
                        if word == "unready" {
                            routable = false;
                        } else if let Some(m) = mapping(word) {
                            ports.push(m);
                        } else {
                            address = Some(word);
                        }
                    }
                    Change::InstanceUpserted(instance(
                        lrp_name, index, presence, state, address, &ports, routable, generation,
                    ))
                }
            }
            [] => unreachable!("empty lines are skipped"),
        };
        changes.push((seq, change));
    }
    changes
}

/// The routing as text: one line per hostname or TCP port, sorted, with the LRPs
/// routed there and the endpoints in their order.
pub fn render(routing: &Routing) -> String {
    let line = |key: String, backends: &routes::Backends| {
        let lrps: Vec<&str> = backends.lrps.iter().map(Name::as_str).collect();
        let endpoints: Vec<String> = backends
            .endpoints
            .iter()
            .map(|e| {
                let presence = match e.instance.presence {
                    Presence::Ordinary => "",
                    Presence::Evacuating => " evacuating",
                    Presence::Suspect => " suspect",
                };
                format!(
                    "{} ({}/{}{presence})",
                    e.addr, e.instance.lrp, e.instance.index
                )
            })
            .collect();
        let endpoints = if endpoints.is_empty() {
            "none".to_owned()
        } else {
            endpoints.join(", ")
        };
        format!("{key} [{}] -> {endpoints}", lrps.join(" "))
    };
    let mut lines: Vec<String> = routing
        .http()
        .iter()
        .map(|(hostname, backends)| line(hostname.into_owned(), backends))
        .collect();
    lines.sort();
    lines.extend(
        routing
            .tcp()
            .iter()
            .map(|(port, backends)| line(format!("tcp {port}"), backends)),
    );
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A table after applying the changes of `fixture` in order.
pub fn table(fixture: &str) -> Table {
    let mut table = Table::new();
    for (seq, change) in parse(fixture) {
        table.apply(seq, change);
    }
    table
}
