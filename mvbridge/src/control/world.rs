//! One look at the world: everything a plan depends on, read from the
//! kernel, in the host's namespace and in every namespace the config
//! names. The daemon's loop, `status`, `check` and `reload` all start here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::OnceLock;

use crate::config::{Config, Vm};
use crate::error::{Error, Result};
use crate::kernel::link_socket::{self, LinkSocket};
use crate::kernel::netlink::{Link, Neighbour, Netlink};
use crate::kernel::netns::NetnsId;
use crate::kernel::poll_set::PollSet;

#[derive(Clone, Debug)]
pub struct World {
    /// The host's namespace.
    pub links: Vec<Link>,
    /// The uplink's own addresses (none when there is no uplink).
    pub uplink_addresses: Vec<IpAddr>,
    /// Routers and resolved neighbours on the uplink.
    pub wire: Vec<Neighbour>,
    /// The namespaces VMs live in, by `ip netns` name.
    pub namespaces: BTreeMap<String, Namespace>,
}

#[derive(Clone, Debug)]
pub enum Namespace {
    Seen {
        id: NetnsId,
        links: Vec<Link>,
    },
    /// No namespace by that name (yet): its container is not running.
    Missing,
    /// There, but not ours to enter (or to read): why. Shared, as worlds
    /// are cloned.
    Unreachable(Arc<Error>),
}

impl World {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// Reads worlds, keeping a socket in each VM namespace. A socket is made
/// inside its namespace and keeps it alive, so it is dropped as soon as
/// the name stands for another namespace (a container restarted) or for
/// none.
pub struct Observer {
    nl: Netlink,
    namespaces: HashMap<String, InNamespace>,
    /// Scratch space for every namespace's link dump.
    buf: Vec<u8>,
    /// Where the namespace sockets' notifications can be waited for.
    news: Option<PollSet>,
}

struct InNamespace {
    id: NetnsId,
    links: LinkSocket,
    /// A full connection, made the first time something needs one (classic
    /// TC hooks): TCX hooks need none, and a connection per container
    /// costs ~55 KiB.
    full: OnceLock<Netlink>,
}

impl InNamespace {
    /// Was a change to a link that `concerns` us announced since the last
    /// dump? The socket is read only when `readable` (`None`: any socket
    /// may be) says it holds something: one syscall fewer per namespace
    /// and pass.
    fn heard(
        &mut self,
        buf: &mut Vec<u8>,
        readable: Option<&[RawFd]>,
        concerns: &dyn Fn(&Link) -> bool,
    ) -> bool {
        if readable.is_none_or(|fds| fds.contains(&self.links.as_fd().as_raw_fd())) {
            self.links.heard_of_changes(buf, concerns)
        } else {
            self.links.has_news()
        }
    }
}

impl Observer {
    pub fn new(nl: Netlink) -> Observer {
        Observer {
            nl,
            namespaces: HashMap::new(),
            buf: Vec::with_capacity(link_socket::BUFFER),
            news: None,
        }
    }

    /// An observer whose namespace sockets join `news`, which becomes
    /// readable when the kernel announces a link change in any of them:
    /// a link renamed, or set up, inside a container's namespace changes
    /// nothing in the host's, and would wait for the periodic pass.
    /// [`Observer::heard_of_changes`] and each pass read what waits on
    /// the readable sockets, which makes `news` quiet again.
    pub fn listening(nl: Netlink, news: PollSet) -> Observer {
        Observer {
            news: Some(news),
            ..Observer::new(nl)
        }
    }

    /// The connection in the host's namespace.
    pub fn netlink(&self) -> &Netlink {
        &self.nl
    }

    /// A connection into `netns` (the host's namespace for `None`), into
    /// the namespace the last look saw; `None` when that namespace was
    /// not there (or can no longer be entered).
    pub fn netlink_in(&self, netns: Option<&str>) -> Option<&Netlink> {
        let Some(name) = netns else {
            return Some(&self.nl);
        };
        let ns = self.namespaces.get(name)?;
        if ns.full.get().is_none() {
            // Into the namespace the socket is in, not whatever the name
            // stands for by now.
            if NetnsId::of(name).ok()? != ns.id {
                return None;
            }
            match Netlink::connect_in(name) {
                Ok(nl) => {
                    let _ = ns.full.set(nl);
                }
                Err(e) => {
                    tracing::debug!(netns = name, "{}", crate::errno::chain(&e));
                    return None;
                }
            }
        }
        ns.full.get()
    }

    pub async fn observe(&mut self, config: &Config) -> Result<World> {
        self.observe_reusing(config, None).await
    }

    /// Like [`Observer::observe`], but namespaces named in `settled`
    /// keep what `last` saw there, as long as the name still stands for
    /// the same namespace and the kernel announced no link change there
    /// since (each namespace's socket listens): an event pass looks into
    /// the namespaces where a VM still waits for its link or something
    /// changed, not into hundreds of containers whose links are in place.
    pub async fn observe_reusing(
        &mut self,
        config: &Config,
        reuse: Option<(&World, &BTreeSet<String>)>,
    ) -> Result<World> {
        let t0 = std::time::Instant::now();
        let mut world = self.observe_host(config).await?;
        let host_us = t0.elapsed().as_micros() as u64;
        let by_netns = vms_by_netns(config);
        let readable = self.readable();
        let mut looked = 0;
        for (&name, vms) in &by_netns {
            let before = reuse.and_then(|(last, _)| last.namespaces.get(name));
            let concerns = vm_links(vms, seen_links(before));
            let settled = reuse.is_some_and(|(_, settled)| settled.contains(name));
            let kept = match (before, self.namespaces.get_mut(name)) {
                (Some(seen @ Namespace::Seen { id, .. }), Some(ns))
                    if settled && ns.id == *id && NetnsId::of(name).is_ok_and(|now| now == *id) =>
                {
                    (!ns.heard(&mut self.buf, readable.as_deref(), &concerns)).then(|| seen.clone())
                }
                _ => None,
            };
            let seen = match kept {
                Some(seen) => seen,
                None => {
                    looked += 1;
                    self.look_into(name, &concerns)
                }
            };
            world.namespaces.insert(name.to_owned(), seen);
        }
        self.namespaces
            .retain(|n, _| world.namespaces.contains_key(n));
        tracing::debug!(
            host_us,
            namespaces_us = t0.elapsed().as_micros() as u64 - host_us,
            looked,
            "observed"
        );
        Ok(world)
    }

    /// Reads the link notifications waiting in VM namespaces (which makes
    /// the [`PollSet`] quiet again): did any announce a change to a VM's
    /// link that no look has seen yet? Tenants' other links (a VPN's tun,
    /// a nested container's veth) come and go without a pass.
    pub fn heard_of_changes(&mut self, config: &Config, last: Option<&World>) -> bool {
        let readable = self.readable();
        let by_netns = vms_by_netns(config);
        let mut heard = false;
        for (name, ns) in &mut self.namespaces {
            let vms = by_netns.get(name.as_str()).map_or(&[][..], Vec::as_slice);
            let before = last.and_then(|w| w.namespaces.get(name));
            let concerns = vm_links(vms, seen_links(before));
            heard |= ns.heard(&mut self.buf, readable.as_deref(), &concerns);
        }
        heard
    }

    /// The namespace sockets holding notifications, by fd; `None`: any
    /// may (the observer waits on no [`PollSet`], or cannot ask it).
    fn readable(&self) -> Option<Vec<RawFd>> {
        let set = self.news.as_ref()?;
        match set.ready(self.namespaces.len()) {
            Ok(fds) => Some(fds),
            Err(e) => {
                tracing::debug!("asking which namespace sockets are readable: {e}");
                None
            }
        }
    }

    /// The host's namespace only (no VM namespace looked into): what the
    /// host's addresses need, without entering hundreds of containers.
    pub async fn observe_host(&self, config: &Config) -> Result<World> {
        let links = self.nl.links().await?;
        let (uplink_addresses, wire) = match links.iter().find(|l| l.name == config.uplink) {
            Some(up) => (
                self.nl.addresses(up.index).await?,
                self.nl.neighbours(up.index).await?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok(World {
            links,
            uplink_addresses,
            wire,
            namespaces: BTreeMap::new(),
        })
    }

    fn look_into(&mut self, name: &str, concerns: &dyn Fn(&Link) -> bool) -> Namespace {
        let id = match NetnsId::of(name) {
            Ok(id) => id,
            Err(e) => {
                self.namespaces.remove(name);
                return match e.errno() {
                    Some(libc::ENOENT) => Namespace::Missing,
                    _ => Namespace::Unreachable(Arc::new(e)),
                };
            }
        };
        if self.namespaces.get(name).is_none_or(|had| had.id != id) {
            match LinkSocket::open_in(name) {
                Ok(links) => {
                    if let Some(news) = &self.news
                        && let Err(e) = news.add(links.as_fd())
                    {
                        tracing::warn!(
                            netns = name,
                            "link changes in this namespace wait for the periodic pass: \
                             cannot watch its socket: {e}"
                        );
                    }
                    let ns = InNamespace {
                        id,
                        links,
                        full: OnceLock::new(),
                    };
                    self.namespaces.insert(name.to_owned(), ns);
                }
                Err(e) => {
                    self.namespaces.remove(name);
                    return Namespace::Unreachable(Arc::new(e));
                }
            }
        }
        let ns = self.namespaces.get_mut(name).expect("inserted above");
        match ns.links.links(&mut self.buf, concerns) {
            Ok(links) => Namespace::Seen { id, links },
            Err(e) => {
                self.namespaces.remove(name);
                Namespace::Unreachable(Arc::new(e))
            }
        }
    }
}

/// The config's VMs by the namespace they live in (VMs in the host's
/// namespace left out).
fn vms_by_netns(config: &Config) -> BTreeMap<&str, Vec<&Vm>> {
    let mut by = BTreeMap::<&str, Vec<&Vm>>::new();
    for vm in &config.vms {
        if let Some(ns) = vm.netns.as_deref() {
            by.entry(ns).or_default().push(vm);
        }
    }
    by
}

/// The links a namespace's last look saw (none if it saw none).
fn seen_links(before: Option<&Namespace>) -> &[Link] {
    match before {
        Some(Namespace::Seen { links, .. }) => links,
        _ => &[],
    }
}

/// Whether a link in a namespace is, or may become, the link of one of
/// `vms` (the namespace's): it has a VM's interface name or MAC, or has
/// the ifindex of a link that had one when the namespace was last `seen`
/// (renamed away, say).
fn vm_links<'a>(vms: &'a [&'a Vm], seen: &[Link]) -> impl Fn(&Link) -> bool + 'a {
    let is_vms = move |l: &Link| {
        vms.iter().any(|v| {
            v.interface.as_deref() == Some(l.name.as_str())
                || v.mac.is_some_and(|m| l.mac == Some(m.0))
        })
    };
    let indexes: Vec<u32> = seen.iter().filter(|l| is_vms(l)).map(|l| l.index).collect();
    move |l: &Link| indexes.contains(&l.index) || is_vms(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: [u8; 6]) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(mac),
            ..Link::default()
        }
    }

    #[test]
    fn a_namespace_s_vm_links_are_known_by_name_mac_or_former_index() {
        let config = Config::parse(
            "uplink = \"enp9s0\"\n\
             [[vm]]\nname = \"by-name\"\ninterface = \"eth0\"\nnetns = \"ctr1\"\naddresses = [\"203.0.113.165\"]\n\
             [[vm]]\nname = \"by-mac\"\nmac = \"52:54:00:00:00:e6\"\nnetns = \"ctr1\"\naddresses = [\"203.0.113.166\"]\n\
             [[vm]]\nname = \"elsewhere\"\ninterface = \"eth1\"\nnetns = \"ctr2\"\naddresses = [\"203.0.113.167\"]\n",
        )
        .unwrap();
        let other = [0x52, 0x54, 0, 0, 0, 0x99];
        let seen = [link(7, "eth0", other), link(8, "tun0", other)];
        let by_netns = vms_by_netns(&config);
        let concerns = vm_links(&by_netns["ctr1"], &seen);
        assert!(concerns(&link(30, "eth0", other)), "its name");
        assert!(
            concerns(&link(31, "mv1", [0x52, 0x54, 0, 0, 0, 0xe6])),
            "its MAC"
        );
        assert!(concerns(&link(7, "renamed", other)), "eth0 as it was");
        assert!(!concerns(&link(8, "tun0", other)), "a tenant's own link");
        assert!(
            !concerns(&link(32, "eth1", other)),
            "another namespace's VM"
        );
    }
}
