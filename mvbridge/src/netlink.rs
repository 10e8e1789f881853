//! What mvbridge asks of rtnetlink: links, their attributes and addresses.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoMacVlan, InfoMacVtap, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::{Handle, LinkMacVlan, LinkMacVtap, LinkUnspec};
use thiserror::Error;

pub type Mac = [u8; 6];

/// A kernel refusal, with the errno kept so callers can explain it.
#[derive(Debug, Error)]
#[error("{what}: {reason}")]
pub struct NetlinkError {
    pub what: String,
    pub errno: Option<i32>,
    pub reason: String,
}

impl NetlinkError {
    fn new(what: impl Into<String>, err: rtnetlink::Error) -> Self {
        let errno = match &err {
            rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
            _ => None,
        };
        let reason = match errno {
            Some(code) => {
                let io = std::io::Error::from_raw_os_error(code);
                format!("{io} ({})", errno_name(code))
            }
            None => err.to_string(),
        };
        NetlinkError {
            what: what.into(),
            errno,
            reason,
        }
    }
}

fn errno_name(code: i32) -> &'static str {
    match code {
        libc::EPERM => "EPERM: needs CAP_NET_ADMIN",
        libc::ENODEV => "ENODEV",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::EADDRINUSE => "EADDRINUSE: another link on this device uses that MAC",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EOPNOTSUPP => "EOPNOTSUPP: the kernel lacks this link type",
        libc::ERANGE => "ERANGE",
        libc::EBUSY => "EBUSY",
        _ => "errno",
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// The attributes of a link mvbridge cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            kind: None,
            lower: None,
            macvlan_mode: None,
            alias: None,
            up: m.header.flags.contains(LinkFlags::Up),
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = a.as_slice().try_into().ok(),
                LinkAttribute::Link(l) => link.lower = Some(*l),
                LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
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

/// A connection to rtnetlink in the caller's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the connection; its worker runs on the current tokio runtime.
    pub fn connect() -> std::io::Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection into network namespace `name`: the socket is made
    /// there and stays there.
    pub fn connect_in(name: &str) -> std::io::Result<Netlink> {
        let (conn, handle, _) = crate::netns::InNetns::run(Some(name), rtnetlink::new_connection)??;
        tokio::spawn(conn);
        Ok(Netlink { handle })
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
                let e = NetlinkError::new(format!("looking up link {name}"), e);
                if e.errno == Some(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::new("listing links", e))?;
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
            .map_err(|e| NetlinkError::new(format!("creating macvlan {name}"), e))?;
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
            .map_err(|e| NetlinkError::new(format!("creating macvtap {name}"), e))?;
        self.created(name).await
    }

    async fn created(&self, name: &str) -> Result<Link> {
        self.link_by_name(name).await?.ok_or_else(|| NetlinkError {
            what: format!("creating {name}"),
            errno: None,
            reason: "the link vanished right after it was created".into(),
        })
    }

    /// Marks a link as mvbridge's (the alias survives the daemon).
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).alias(alias).build();
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::new(format!("setting the alias of link {index}"), e))
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
        self.handle.link().change(msg).execute().await.map_err(|e| {
            NetlinkError::new(format!("turning off IPv6 addresses on link {index}"), e)
        })
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::new(format!("bringing link {index} up"), e))
    }

    pub async fn delete(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| NetlinkError::new(format!("deleting link {index}"), e))
    }

    /// The addresses of a link that are its own: global IPv4 and IPv6,
    /// and IPv6 link-local (neighbours on the segment use that one too).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>> {
        let req = self.handle.address().get().set_link_index_filter(index);
        let msgs: Vec<AddressMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::new(format!("listing addresses of link {index}"), e))?;
        let mut out = Vec::new();
        for m in msgs {
            let scope_ok = match m.header.family {
                AddressFamily::Inet => m.header.scope == AddressScope::Universe,
                AddressFamily::Inet6 => {
                    matches!(m.header.scope, AddressScope::Universe | AddressScope::Link)
                }
                _ => false,
            };
            if m.header.index != index || !scope_ok {
                continue;
            }
            // IPv4 carries the local address in IFA_LOCAL, IPv6 in IFA_ADDRESS.
            let addr = m
                .attributes
                .iter()
                .find_map(|a| match (a, m.header.family) {
                    (AddressAttribute::Local(ip), AddressFamily::Inet) => Some(*ip),
                    (AddressAttribute::Address(ip), AddressFamily::Inet6) => Some(*ip),
                    _ => None,
                });
            out.extend(addr);
        }
        Ok(out)
    }
}
