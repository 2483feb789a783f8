//! The cell's container network: one bridge with the subnet's first address, a veth pair
//! per container (its end named `eth0` in the container's network namespace), outbound
//! masquerade, and published ports.
//!
//! Ports are published with nftables: the cell's own table `ip corral_<bridge>` holds a
//! map `ports` from host port to container address and port, and DNAT rules in
//! prerouting (other hosts, other containers) and output (this host, `127.0.0.1`) look
//! every local TCP destination up in it. Publishing a port is one map element, added and
//! removed over netlink; the table and its rules are made once by `nft` when the backend
//! starts. `route_localnet` on the bridge lets DNAT send `127.0.0.1` traffic out of it,
//! and masquerading traffic from host addresses gives the container a source it can
//! answer.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use nix::unistd::Pid;

use super::netlink::Netlink;

/// The map of published ports in the cell's nftables table.
const PORT_MAP: &str = "ports";
/// The name of the container's end of its veth pair.
const CONTAINER_LINK: &str = "eth0";

/// The cell bridge and the addresses and host ports handed out on it.
#[derive(Debug)]
pub(super) struct Network {
    bridge: String,
    subnet: Ipv4Addr,
    table: String,
    /// Last octets of container addresses in use (2..=254).
    used_hosts: BTreeSet<u8>,
    next_host: u8,
    host_ports: RangeInclusive<u16>,
    used_ports: BTreeSet<u16>,
    next_port: u16,
    /// A prefix for host veth names that differs between cells.
    veth_prefix: String,
}

impl Network {
    pub(super) fn new(
        bridge: &str,
        subnet: Ipv4Addr,
        host_ports: RangeInclusive<u16>,
    ) -> anyhow::Result<Network> {
        check_link_name(bridge)?;
        if subnet.octets()[3] != 0 {
            bail!("subnet {subnet} is not a /24 network address (its last octet must be 0)");
        }
        if host_ports.is_empty() {
            bail!("the host port range {host_ports:?} is empty");
        }
        Ok(Network {
            bridge: bridge.to_owned(),
            subnet,
            table: format!("corral_{bridge}"),
            used_hosts: BTreeSet::new(),
            next_host: 2,
            next_port: *host_ports.start(),
            host_ports,
            used_ports: BTreeSet::new(),
            veth_prefix: format!("c{:06x}", fnv1a(bridge.as_bytes()) & 0xff_ffff),
        })
    }

    pub(super) fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Makes the bridge, its address, forwarding and the nftables table, idempotently.
    /// The table is made afresh, so elements of a previous helper's containers are gone.
    pub(super) fn install(&self) -> anyhow::Result<()> {
        let mut nl = Netlink::route()?;
        nl.add_bridge(&self.bridge)?;
        let index = nl
            .link_index(&self.bridge)?
            .with_context(|| format!("bridge {} vanished after it was made", self.bridge))?;
        nl.add_address(index, self.gateway(), 24)?;
        nl.set_up(index)?;
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", self.bridge),
            "1",
        )?;
        nft(&self.table_script())
            .with_context(|| format!("installing nftables table ip {}", self.table))
    }

    /// Removes the nftables table and the bridge.
    pub(super) fn uninstall(&self) -> anyhow::Result<()> {
        nft(&format!(
            "table ip {t}\ndelete table ip {t}\n",
            t = self.table
        ))
        .with_context(|| format!("removing nftables table ip {}", self.table))?;
        Netlink::route()?.delete_link(&self.bridge)
    }

    fn table_script(&self) -> String {
        let subnet = format!("{}/24", self.subnet);
        // `table; delete table; table {...}` replaces any old table in one transaction.
        format!(
            r#"table ip {table}
delete table ip {table}
table ip {table} {{
    map {map} {{
        type inet_service : ipv4_addr . inet_service
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        fib daddr type local dnat ip addr . port to tcp dport map @{map}
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        fib daddr type local dnat ip addr . port to tcp dport map @{map}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} ip daddr != {subnet} oifname != "{bridge}" masquerade
        oifname "{bridge}" fib saddr type local masquerade
        oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade
    }}
}}
"#,
            table = self.table,
            map = PORT_MAP,
            bridge = self.bridge,
        )
    }

    /// Marks an address and host ports as taken (a record of a previous helper).
    pub(super) fn reserve(&mut self, address: Ipv4Addr, host_ports: &[u16]) {
        if let Some(host) = self.host_part(address) {
            self.used_hosts.insert(host);
        }
        self.used_ports.extend(host_ports.iter().copied());
    }

    pub(super) fn release(&mut self, address: Ipv4Addr, host_ports: &[u16]) {
        if let Some(host) = self.host_part(address) {
            self.used_hosts.remove(&host);
        }
        for port in host_ports {
            self.used_ports.remove(port);
        }
    }

    fn host_part(&self, address: Ipv4Addr) -> Option<u8> {
        let [a, b, c, d] = address.octets();
        let [sa, sb, sc, _] = self.subnet.octets();
        ((a, b, c) == (sa, sb, sc)).then_some(d)
    }

    /// Takes a free container address, round robin so a freed one is reused last.
    pub(super) fn allocate_address(&mut self) -> anyhow::Result<Ipv4Addr> {
        for _ in 2..=254u8 {
            let host = self.next_host;
            self.next_host = if host >= 254 { 2 } else { host + 1 };
            if self.used_hosts.insert(host) {
                let [a, b, c, _] = self.subnet.octets();
                return Ok(Ipv4Addr::new(a, b, c, host));
            }
        }
        bail!("all 253 addresses of {}/24 are in use", self.subnet)
    }

    /// Takes `count` free host ports, round robin, skipping ports a host process listens
    /// on.
    pub(super) fn allocate_ports(&mut self, count: usize) -> anyhow::Result<Vec<u16>> {
        self.allocate_ports_where(count, |port| TcpListener::bind(("0.0.0.0", port)).is_ok())
    }

    /// [`Self::allocate_ports`] with the host probe given: `free(port)` says whether
    /// nothing on the host holds `port`.
    fn allocate_ports_where(
        &mut self,
        count: usize,
        free: impl Fn(u16) -> bool,
    ) -> anyhow::Result<Vec<u16>> {
        let mut taken = Vec::with_capacity(count);
        let span = usize::from(*self.host_ports.end() - *self.host_ports.start()) + 1;
        let mut tried = 0;
        while taken.len() < count {
            if tried == span {
                self.release(Ipv4Addr::UNSPECIFIED, &taken);
                bail!(
                    "no free host port left in {}-{}",
                    self.host_ports.start(),
                    self.host_ports.end()
                );
            }
            tried += 1;
            let port = self.next_port;
            self.next_port = if port >= *self.host_ports.end() {
                *self.host_ports.start()
            } else {
                port + 1
            };
            if self.used_ports.contains(&port) || !free(port) {
                continue;
            }
            self.used_ports.insert(port);
            taken.push(port);
        }
        Ok(taken)
    }

    /// The host end's name of the veth pair of the container at `address`.
    pub(super) fn veth_name(&self, address: Ipv4Addr) -> String {
        format!("{}-{}", self.veth_prefix, address.octets()[3])
    }

    /// Wires the network namespace of process `pid` to the bridge: a veth pair, the
    /// container's address, loopback, and a default route via the bridge.
    pub(super) fn attach(&self, pid: Pid, address: Ipv4Addr, veth: &str) -> anyhow::Result<()> {
        let netns = File::open(format!("/proc/{pid}/ns/net"))
            .with_context(|| format!("opening the network namespace of {pid}"))?;
        let mut host = Netlink::route()?;
        let bridge = host
            .link_index(&self.bridge)?
            .with_context(|| format!("bridge {} is missing", self.bridge))?;
        // A veth of a container that once had this address may linger.
        host.delete_link(veth)?;
        host.add_veth(veth, bridge, CONTAINER_LINK, netns.as_fd())?;
        let mut inside = Netlink::route_in(&netns)?;
        // A new network namespace has only loopback, always index 1.
        inside.set_up(1).context("bringing up lo")?;
        let eth0 = inside
            .link_index(CONTAINER_LINK)?
            .context("eth0 is missing in the container")?;
        inside.set_up(eth0).context("bringing up eth0")?;
        inside.add_address(eth0, address, 24)?;
        inside.add_default_route(self.gateway(), eth0)?;
        Ok(())
    }

    /// Removes the host end of a container's veth pair (the other end goes with it).
    pub(super) fn detach(&self, veth: &str) -> anyhow::Result<()> {
        Netlink::route()?.delete_link(veth)
    }

    /// Publishes `host_port` to `address:container_port`.
    pub(super) fn publish(
        &self,
        host_port: u16,
        address: Ipv4Addr,
        container_port: u16,
    ) -> anyhow::Result<()> {
        Netlink::netfilter()?.port_map_element(
            &self.table,
            PORT_MAP,
            host_port,
            address,
            container_port,
            true,
        )
    }

    /// Stops publishing `host_port`; an unpublished port is fine.
    pub(super) fn unpublish(&self, host_port: u16) -> anyhow::Result<()> {
        Netlink::netfilter()?.port_map_element(
            &self.table,
            PORT_MAP,
            host_port,
            Ipv4Addr::UNSPECIFIED,
            0,
            false,
        )
    }
}

/// Checks a network interface name: 1-15 bytes of letters, digits, `-`, `_` and `.`
/// (it also names the nftables table, so nothing that nft would parse).
fn check_link_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!("bridge name {name:?} must be 1-15 bytes");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!(
            "bridge name {name:?} must start with a letter and hold only letters, digits, '-', '_' and '.'"
        );
    }
    Ok(())
}

fn write_sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).with_context(|| format!("writing {value} to {path}"))
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (Debian package nftables)")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// FNV-1a, a hash that stays the same across builds (std's does not promise to).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Network {
        Network::new("corral0", Ipv4Addr::new(10, 88, 0, 0), 40000..=40002).unwrap()
    }

    #[test]
    fn addresses_are_handed_out_round_robin() {
        let mut net = network();
        let a = net.allocate_address().unwrap();
        let b = net.allocate_address().unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3))
        );
        net.release(a, &[]);
        assert_eq!(net.allocate_address().unwrap(), Ipv4Addr::new(10, 88, 0, 4));
        assert!(net.veth_name(a).len() <= 15);
    }

    #[test]
    fn addresses_run_out() {
        let mut net = network();
        for _ in 0..253 {
            net.allocate_address().unwrap();
        }
        assert!(net.allocate_address().is_err());
    }

    // The host probe is given, so these do not depend on what this machine listens on.
    #[test]
    fn ports_run_out_and_come_back() {
        let mut net = network();
        let all_free = |_| true;
        let ports = net.allocate_ports_where(3, all_free).unwrap();
        assert_eq!(ports, vec![40000, 40001, 40002]);
        assert!(net.allocate_ports_where(1, all_free).is_err());
        net.release(Ipv4Addr::UNSPECIFIED, &ports[..1]);
        assert_eq!(net.allocate_ports_where(1, all_free).unwrap(), vec![40000]);
    }

    #[test]
    fn ports_a_host_process_holds_are_skipped() {
        let mut net = network();
        let ports = net.allocate_ports_where(2, |port| port != 40001).unwrap();
        assert_eq!(ports, vec![40000, 40002]);
        let err = net
            .allocate_ports_where(1, |port| port != 40001)
            .unwrap_err();
        assert!(err.to_string().contains("40000-40002"), "{err}");
    }

    #[test]
    fn a_failed_allocation_takes_nothing() {
        let mut net = network();
        assert!(net.allocate_ports_where(4, |_| true).is_err());
        assert_eq!(net.allocate_ports_where(3, |_| true).unwrap().len(), 3);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Network::new("br 0", Ipv4Addr::new(10, 88, 0, 0), 1..=2).is_err());
        assert!(Network::new("corral0", Ipv4Addr::new(10, 88, 0, 5), 1..=2).is_err());
        assert!(Network::new(&"x".repeat(16), Ipv4Addr::new(10, 88, 0, 0), 1..=2).is_err());
    }
}
