//! A small synchronous netlink client for the container network: the rtnetlink requests
//! that make a bridge, a veth pair with one end in a container's network namespace, its
//! addresses and default route, and the nftables requests that add and remove elements
//! of the cell's port map.
//!
//! Requests are built byte by byte in the kernel's wire format (netlink(7), rtnetlink(7),
//! `linux/netfilter/nf_tables.h`): a handful of message kinds does not justify an
//! async netlink stack, and talking to the kernel directly keeps a container start free
//! of `ip` and `nft` subprocesses, which cost milliseconds each.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFF_UP: u32 = 0x1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

const AF_INET: u8 = libc::AF_INET as u8;
const NFPROTO_IPV4: u8 = 2;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

/// A netlink socket of one protocol, bound in one network namespace.
#[derive(Debug)]
pub(super) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// An rtnetlink socket in the caller's network namespace.
    pub(super) fn route() -> anyhow::Result<Netlink> {
        Netlink::open(SockProtocol::NetlinkRoute)
    }

    /// An rtnetlink socket in the network namespace `netns` (an open `/proc/<pid>/ns/net`).
    /// A socket stays in the namespace it was made in, so the calling thread enters the
    /// namespace just long enough to make it.
    pub(super) fn route_in(netns: &File) -> anyhow::Result<Netlink> {
        let own = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        nix::sched::setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
            .context("entering the container's netns")?;
        let made = Netlink::route();
        nix::sched::setns(own.as_fd(), CloneFlags::CLONE_NEWNET)
            .context("returning to the helper's netns")?;
        made
    }

    /// An nfnetlink socket in the caller's network namespace.
    pub(super) fn netfilter() -> anyhow::Result<Netlink> {
        Netlink::open(SockProtocol::NetlinkNetFilter)
    }

    fn open(protocol: SockProtocol) -> anyhow::Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .context("opening a netlink socket")?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).context("binding a netlink socket")?;
        Ok(Netlink { fd, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one or more messages (a batch) and waits for the kernel's answer to the one
    /// with sequence number `seq`: with `want_reply`, its reply; otherwise its
    /// acknowledgement. An error of any message of the batch is returned as such.
    fn transact(&mut self, bytes: &[u8], seq: u32, want_reply: bool) -> Result<Vec<u8>, Errno> {
        let sent = send(self.fd.as_raw_fd(), bytes, MsgFlags::empty())?;
        if sent != bytes.len() {
            return Err(Errno::EMSGSIZE);
        }
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                other => other?,
            };
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let len = u32_at(&buf, at) as usize;
                let kind = u16_at(&buf, at + 4);
                let reply_seq = u32_at(&buf, at + 8);
                if len < NLMSG_HDRLEN || at + len > n {
                    return Err(Errno::EBADMSG);
                }
                let payload = &buf[at + NLMSG_HDRLEN..at + len];
                if kind == NLMSG_ERROR && payload.len() >= 4 {
                    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    if code != 0 {
                        return Err(Errno::from_raw(-code));
                    }
                    if reply_seq == seq && !want_reply {
                        return Ok(Vec::new());
                    }
                } else if reply_seq == seq && want_reply {
                    return Ok(payload.to_vec());
                }
                at += align(len);
            }
        }
    }

    fn request(&mut self, mut message: Message) -> Result<(), Errno> {
        let seq = self.next_seq();
        let bytes = message.finish(seq);
        self.transact(&bytes, seq, false).map(drop)
    }

    /// The index of the link called `name`, or None when there is none.
    pub(super) fn link_index(&mut self, name: &str) -> anyhow::Result<Option<u32>> {
        let mut m = Message::new(RTM_GETLINK, NLM_F_REQUEST);
        m.ifinfomsg(0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        // A get answers with the link itself (no acknowledgement is asked for).
        let seq = self.next_seq();
        let bytes = m.finish(seq);
        match self.transact(&bytes, seq, true) {
            Ok(reply) if reply.len() >= 8 => Ok(Some(u32_at(&reply, 4))),
            Ok(_) => bail!("looking up link {name}: the kernel's answer is too short"),
            Err(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    /// Makes a bridge and brings it up; an existing link of that name is left as is.
    pub(super) fn add_bridge(&mut self, name: &str) -> anyhow::Result<()> {
        let mut m = Message::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        m.ifinfomsg(0, IFF_UP, IFF_UP);
        m.attr_str(IFLA_IFNAME, name);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end(info);
        match self.request(m) {
            Ok(_) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating bridge {name}")),
        }
    }

    /// Brings the link with index `index` up.
    pub(super) fn set_up(&mut self, index: u32) -> anyhow::Result<()> {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
        m.ifinfomsg(index, IFF_UP, IFF_UP);
        self.request(m)
            .with_context(|| format!("bringing link {index} up"))
    }

    /// Makes a veth pair: `host` on `bridge` (an index) in this namespace, up, and
    /// `peer` in the namespace `peer_netns`, down.
    pub(super) fn add_veth(
        &mut self,
        host: &str,
        bridge: u32,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
    ) -> anyhow::Result<()> {
        let mut m = Message::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        m.ifinfomsg(0, IFF_UP, IFF_UP);
        m.attr_str(IFLA_IFNAME, host);
        m.attr(IFLA_MASTER, &bridge.to_ne_bytes());
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.begin(IFLA_INFO_DATA);
        let peer_info = m.begin(VETH_INFO_PEER);
        // Not up yet: a veth cannot open before its peer is linked to it (ENOTCONN).
        m.ifinfomsg(0, 0, 0);
        m.attr_str(IFLA_IFNAME, peer);
        m.attr(IFLA_NET_NS_FD, &peer_netns.as_raw_fd().to_ne_bytes());
        m.end(peer_info);
        m.end(data);
        m.end(info);
        self.request(m)
            .with_context(|| format!("creating veth pair {host}/{peer}"))
    }

    /// Deletes the link called `name`; a missing link is fine.
    pub(super) fn delete_link(&mut self, name: &str) -> anyhow::Result<()> {
        let mut m = Message::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK);
        m.ifinfomsg(0, 0, 0);
        m.attr_str(IFLA_IFNAME, name);
        match self.request(m) {
            Ok(_) | Err(Errno::ENODEV) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting link {name}")),
        }
    }

    /// Adds `address/prefix` to link `index`; an address already there is fine.
    pub(super) fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> anyhow::Result<()> {
        let mut m = Message::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        m.bytes(&[AF_INET, prefix, 0, RT_SCOPE_UNIVERSE]);
        m.bytes(&index.to_ne_bytes());
        m.attr(IFA_LOCAL, &address.octets());
        m.attr(IFA_ADDRESS, &address.octets());
        let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        let broadcast = Ipv4Addr::from(u32::from(address) | host_bits);
        m.attr(IFA_BROADCAST, &broadcast.octets());
        match self.request(m) {
            Ok(_) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding address {address}/{prefix}")),
        }
    }

    /// Adds a default route via `gateway` out of link `index`.
    pub(super) fn add_default_route(
        &mut self,
        gateway: Ipv4Addr,
        index: u32,
    ) -> anyhow::Result<()> {
        let mut m = Message::new(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        m.bytes(&[
            AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        m.bytes(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets());
        m.attr(RTA_OIF, &index.to_ne_bytes());
        self.request(m)
            .with_context(|| format!("adding a default route via {gateway}"))
    }

    /// Adds (or with `add == false` deletes) `port -> address . target_port` in the map
    /// `map` of the `ip` table `table`, whose type is
    /// `inet_service : ipv4_addr . inet_service`. Deleting a missing element is fine.
    pub(super) fn port_map_element(
        &mut self,
        table: &str,
        map: &str,
        port: u16,
        address: Ipv4Addr,
        target_port: u16,
        add: bool,
    ) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        let begin_seq = self.next_seq();
        let mut begin = Message::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST);
        begin.nfgenmsg(0, NFNL_SUBSYS_NFTABLES);
        bytes.extend(begin.finish(begin_seq));

        let seq = self.next_seq();
        let (kind, flags) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
        } else {
            (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        };
        let mut m = Message::new((NFNL_SUBSYS_NFTABLES << 8) | kind, flags);
        m.nfgenmsg(NFPROTO_IPV4, 0);
        m.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        m.attr_str(NFTA_SET_ELEM_LIST_SET, map);
        let elements = m.begin(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        let element = m.begin(NFTA_LIST_ELEM | NLA_F_NESTED);
        let key = m.begin(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
        m.attr(NFTA_DATA_VALUE, &port.to_be_bytes());
        m.end(key);
        if add {
            // A concatenation puts each field in its own 32-bit register.
            let mut value = [0u8; 8];
            value[..4].copy_from_slice(&address.octets());
            value[4..6].copy_from_slice(&target_port.to_be_bytes());
            let data = m.begin(NFTA_SET_ELEM_DATA | NLA_F_NESTED);
            m.attr(NFTA_DATA_VALUE, &value);
            m.end(data);
        }
        m.end(element);
        m.end(elements);
        bytes.extend(m.finish(seq));

        let end_seq = self.next_seq();
        let mut end = Message::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST);
        end.nfgenmsg(0, NFNL_SUBSYS_NFTABLES);
        bytes.extend(end.finish(end_seq));

        match self.transact(&bytes, seq, false) {
            Ok(_) => Ok(()),
            Err(Errno::ENOENT) if !add => Ok(()),
            Err(e) => Err(e).with_context(|| {
                let verb = if add { "adding" } else { "removing" };
                format!(
                    "{verb} port {port} -> {address}:{target_port} in nftables map {table} {map}"
                )
            }),
        }
    }
}

/// One netlink message being built: a header, a fixed family header, attributes.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Message {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Message { buf }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `struct ifinfomsg` for any address family.
    fn ifinfomsg(&mut self, index: u32, flags: u32, change: u32) {
        self.bytes(&[0, 0, 0, 0]);
        self.bytes(&index.to_ne_bytes());
        self.bytes(&flags.to_ne_bytes());
        self.bytes(&change.to_ne_bytes());
    }

    /// `struct nfgenmsg`; `res_id` is big-endian on the wire.
    fn nfgenmsg(&mut self, family: u8, res_id: u16) {
        self.bytes(&[family, 0]);
        self.bytes(&res_id.to_be_bytes());
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).expect("netlink attributes here are small");
        self.bytes(&len.to_ne_bytes());
        self.bytes(&kind.to_ne_bytes());
        self.bytes(data);
        self.pad();
    }

    fn attr_str(&mut self, kind: u16, value: &str) {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    /// Starts a nested attribute; returns where it starts, for [`Message::end`].
    fn begin(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.bytes(&[0, 0]);
        self.bytes(&kind.to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).expect("netlink attributes here are small");
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(&mut self, seq: u32) -> Vec<u8> {
        self.pad();
        let len = u32::try_from(self.buf.len()).expect("netlink messages here are small");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        std::mem::take(&mut self.buf)
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}
