//! What mvbridge asks of rtnetlink: links and their attributes, the
//! uplink's addresses, routers and neighbours; creating, changing and
//! deleting the links it owns.

use std::net::IpAddr;
use std::sync::Arc;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoMacVlan, InfoMacVtap, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use rtnetlink::{Handle, LinkMacVlan, LinkMacVtap, LinkUnspec};

use crate::error::{Error, Result};

pub type Mac = [u8; 6];

/// The attributes of a link mvbridge cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    /// `IFLA_INFO_KIND`: "macvtap", "macvlan", "veth", ...; `None` for
    /// physical NICs.
    pub kind: Option<String>,
    /// `IFLA_LINK`: the lower device of a macvlan/macvtap.
    pub lower: Option<u32>,
    pub macvlan_mode: Option<MacVlanMode>,
    pub alias: Option<String>,
    pub up: bool,
    /// Receives every multicast group (`IFF_ALLMULTI`).
    pub allmulti: bool,
    /// The link's IPv6 settings; `None` on a kernel without IPv6.
    pub ipv6: Option<Ipv6Conf>,
}

/// The IPv6 settings of a link mvbridge keeps (its sysctls, as a link
/// dump reports them: no file to read per link and pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Conf {
    pub disabled: bool,
    pub accept_ra: bool,
}

impl Link {
    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            kind: None,
            lower: None,
            macvlan_mode: None,
            alias: None,
            up: m.header.flags.contains(LinkFlags::Up),
            allmulti: m.header.flags.contains(LinkFlags::Allmulti),
            ipv6: None,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = a.as_slice().try_into().ok(),
                LinkAttribute::Link(l) => link.lower = Some(*l),
                LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
                LinkAttribute::AfSpecUnspec(specs) => {
                    for spec in specs {
                        let AfSpecUnspec::Inet6(inet6) = spec else {
                            continue;
                        };
                        for x in inet6 {
                            if let AfSpecInet6::DevConf(c) = x {
                                link.ipv6 = Some(Ipv6Conf {
                                    disabled: c.disable_ipv6 != 0,
                                    accept_ra: c.accept_ra != 0,
                                });
                            }
                        }
                    }
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::MacVlan(v)) => {
                                for x in v {
                                    if let InfoMacVlan::Mode(mode) = x {
                                        link.macvlan_mode = Some(*mode);
                                    }
                                }
                            }
                            LinkInfo::Data(InfoData::MacVtap(v)) => {
                                for x in v {
                                    if let InfoMacVtap::Mode(mode) = x {
                                        link.macvlan_mode = Some(*mode);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// An address on the wire the host relies on: a router it sends through,
/// or a neighbour it has resolved (with the MAC it resolved it to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    pub mac: Option<Mac>,
}

/// A classifier on one side of a link's clsact qdisc (`tc filter show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub priority: u16,
    pub handle: u32,
    /// "bpf", "u32", "flower", ...
    pub kind: String,
    /// A BPF filter's program name (its ELF section name) and id.
    pub name: Option<String>,
    pub prog_id: Option<u32>,
}

/// A connection to rtnetlink in the network namespace it was made in.
/// Clones share its socket.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// One dump at a time on the socket: the kernel refuses a second
    /// while one runs (EBUSY, `netlink_dump_start`), and the loop, the
    /// metrics endpoint and the libvirt follower share a connection.
    /// Found on Debian 12's 6.1 under TCG, where a scrape's neighbour
    /// dump met the loop's.
    dumping: Arc<tokio::sync::Mutex<()>>,
}

impl Netlink {
    /// Opens the connection; its worker runs on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("opening rtnetlink", e))?;
        tokio::spawn(conn);
        Ok(Netlink::over(handle))
    }

    /// A connection into network namespace `name`: the socket is made
    /// there and stays there (and keeps that namespace alive while it
    /// exists).
    pub fn connect_in(name: &str) -> Result<Netlink> {
        let made = crate::kernel::netns::InNetns::run(Some(name), rtnetlink::new_connection)?;
        let (conn, handle, _) =
            made.map_err(|e| Error::io(format!("opening rtnetlink in netns {name:?}"), e))?;
        tokio::spawn(conn);
        Ok(Netlink::over(handle))
    }

    fn over(handle: Handle) -> Netlink {
        Netlink {
            handle,
            dumping: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) => {
                let e = Error::netlink(format!("looking up link {name}"), e);
                if e.errno() == Some(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let _one = self.dumping.lock().await;
        // Without counters: they are most of each message (the kernel
        // gathers them per CPU), and nothing here reads them.
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("listing links", e))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Creates a bridge-mode macvlan on `lower`, down and without ARP.
    pub async fn create_macvlan(&self, name: &str, lower: u32, mac: Option<Mac>) -> Result<Link> {
        let mut b = LinkMacVlan::new(name, lower, MacVlanMode::Bridge)
            .arp(false)
            .down();
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("creating macvlan {name}"), e))?;
        self.created(name).await
    }

    /// Creates a bridge-mode macvtap on `lower` with the guest's MAC, down.
    pub async fn create_macvtap(&self, name: &str, lower: u32, mac: Mac) -> Result<Link> {
        let msg = LinkMacVtap::new(name, lower, MacVlanMode::Bridge)
            .address(mac.to_vec())
            .down()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("creating macvtap {name}"), e))?;
        self.created(name).await
    }

    async fn created(&self, name: &str) -> Result<Link> {
        self.link_by_name(name).await?.ok_or_else(|| {
            Error::Unfit(format!(
                "link {name} vanished right after mvbridge created it"
            ))
        })
    }

    async fn change(&self, index: u32, doing: String, msg: LinkMessage) -> Result<()> {
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("{doing} (link {index})"), e))
    }

    /// Marks a link as mvbridge's (the alias survives the daemon).
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).alias(alias).build();
        self.change(index, format!("setting alias {alias:?}"), msg)
            .await
    }

    /// No IPv6 address generation: no link-local address, hence no DAD,
    /// router solicitation or MLD report that could carry the link's MAC.
    pub async fn disable_ipv6_addresses(&self, index: u32) -> Result<()> {
        let agm =
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
                In6AddrGenMode::None,
            )])]);
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(agm)
            .build();
        self.change(index, "turning off IPv6 addresses".into(), msg)
            .await
    }

    /// Lets every multicast group through the link (`IFF_ALLMULTI`).
    pub async fn set_allmulticast(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).allmulticast(true).build();
        self.change(index, "letting all multicast through".into(), msg)
            .await
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("bringing link {index} up"), e))
    }

    pub async fn delete(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("deleting link {index}"), e))
    }

    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>> {
        let _one = self.dumping.lock().await;
        let req = self.handle.address().get().set_link_index_filter(index);
        let msgs: Vec<AddressMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink(format!("listing addresses of link {index}"), e))?;
        // The filter is applied by the kernel on recent versions only.
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .collect())
    }

    /// The addresses of a link that are its own: global IPv4 and IPv6,
    /// and IPv6 link-local (neighbours on the segment use that one too).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for m in self.address_messages(index).await? {
            let scope_ok = match m.header.family {
                AddressFamily::Inet => m.header.scope == AddressScope::Universe,
                AddressFamily::Inet6 => {
                    matches!(m.header.scope, AddressScope::Universe | AddressScope::Link)
                }
                _ => false,
            };
            if scope_ok {
                out.extend(own_address(&m));
            }
        }
        Ok(out)
    }

    /// Removes every IPv6 address of a link (a VM's: the host has no
    /// business speaking there). Returns what it removed.
    pub async fn remove_ipv6_addresses(&self, index: u32) -> Result<Vec<IpAddr>> {
        let mut removed = Vec::new();
        for m in self.address_messages(index).await? {
            if m.header.family != AddressFamily::Inet6 {
                continue;
            }
            let addr = own_address(&m);
            self.handle
                .address()
                .del(m)
                .execute()
                .await
                .map_err(|e| Error::netlink(format!("removing an address of link {index}"), e))?;
            removed.extend(addr);
        }
        Ok(removed)
    }

    /// The routers the host sends through on link `index` (gateways of
    /// its routes there) and the neighbours it has resolved there.
    pub async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        let _one = self.dumping.lock().await;
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(req)
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::netlink("listing routes", e))?;
            out.extend(routes.iter().filter_map(|r| gateway_on(r, index)));
        }
        let entries: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("listing neighbours", e))?;
        out.extend(entries.iter().filter_map(|n| resolved_on(n, index)));
        Ok(out)
    }
}

impl Netlink {
    /// The classifiers on the ingress or egress side of link `index`.
    pub async fn filters(&self, index: u32, ingress: bool) -> Result<Vec<Filter>> {
        let _one = self.dumping.lock().await;
        let mut tc = self.handle.traffic_filter(index as i32);
        let req = if ingress {
            tc.get().ingress()
        } else {
            tc.get().egress()
        };
        let side = if ingress { "ingress" } else { "egress" };
        let msgs: Vec<TcMessage> = req.execute().try_collect().await.map_err(|e| {
            Error::netlink(format!("listing the {side} filters of link {index}"), e)
        })?;
        Ok(msgs.iter().filter_map(filter).collect())
    }

    /// The kinds of the qdiscs on link `index` ("clsact", "ingress",
    /// "noqueue", ...).
    pub async fn qdiscs(&self, index: u32) -> Result<Vec<String>> {
        let _one = self.dumping.lock().await;
        let msgs: Vec<TcMessage> = self
            .handle
            .qdisc()
            .get()
            .index(index as i32)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink(format!("listing the qdiscs of link {index}"), e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index as i32)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    /// Deletes link `index`'s clsact qdisc (and every filter on it).
    pub async fn delete_clsact(&self, index: u32) -> Result<()> {
        let mut req = self.handle.qdisc().del(index as i32);
        let m = req.message_mut();
        m.header.parent = TcHandle::CLSACT;
        m.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        // The kernel refuses if the qdisc there is of another kind.
        m.attributes.push(TcAttribute::Kind("clsact".into()));
        req.execute()
            .await
            .map_err(|e| Error::netlink(format!("deleting the clsact qdisc of link {index}"), e))
    }
}

/// A filter of a dump; the entry each priority also gets (handle 0, no
/// options) is none.
fn filter(m: &TcMessage) -> Option<Filter> {
    let handle = u32::from(m.header.handle);
    if handle == 0 {
        return None;
    }
    let mut f = Filter {
        priority: (m.header.info >> 16) as u16,
        handle,
        kind: String::new(),
        name: None,
        prog_id: None,
    };
    for a in &m.attributes {
        match a {
            TcAttribute::Kind(k) => f.kind = k.clone(),
            TcAttribute::Options(opts) => {
                for o in opts {
                    match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => f.name = Some(n.clone()),
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => f.prog_id = Some(*id),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(f)
}

/// IPv4 carries the local address in IFA_LOCAL, IPv6 in IFA_ADDRESS.
fn own_address(m: &AddressMessage) -> Option<IpAddr> {
    m.attributes
        .iter()
        .find_map(|a| match (a, m.header.family) {
            (AddressAttribute::Local(ip), AddressFamily::Inet) => Some(*ip),
            (AddressAttribute::Address(ip), AddressFamily::Inet6) => Some(*ip),
            _ => None,
        })
}

/// The gateway of a route out of link `index`, if it has one.
fn gateway_on(r: &RouteMessage, index: u32) -> Option<Neighbour> {
    let oif = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    if oif != Some(index) {
        return None;
    }
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(Neighbour {
            addr: IpAddr::V4(*v4),
            mac: None,
        }),
        RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(Neighbour {
            addr: IpAddr::V6(*v6),
            mac: None,
        }),
        _ => None,
    })
}

/// A neighbour entry on link `index` that resolved to a MAC.
fn resolved_on(n: &NeighbourMessage, index: u32) -> Option<Neighbour> {
    let resolved = matches!(
        n.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    );
    if n.header.ifindex != index || !resolved {
        return None;
    }
    let mut addr = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                addr = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                addr = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = l.as_slice().try_into().ok(),
            _ => {}
        }
    }
    Some(Neighbour { addr: addr?, mac })
}
