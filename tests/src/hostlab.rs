//! A lab whose host is the machine's own root network namespace, for
//! mvbridge run as the machine's service (tests/tests/package.rs, in the
//! VM of `cargo xtask vmtest-package`). The service runs where systemd
//! runs it, in the root namespace, so the uplink and the VMs' macvtaps
//! are there; the gateway and the guests are namespaces, as in [`Lab`]:
//!
//! ```text
//!  gw (netns)  203.0.113.129/26, 2001:db8:0:1::1/64 and fe80::1 on wire0
//!   | wire0 -- enp9s0 (a veth pair)
//!  root namespace: enp9s0 203.0.113.157/32 default via .129 on-link;
//!                  2001:db8:0:1::2/64 default via fe80::1
//!   |-- macvtap0 (bridge) -- guest a (netns): 203.0.113.161/26
//!   |-- mvt-web  (bridge, created by mvbridge) -- guest b: .162/26
//!   |-- macvtap2 (bridge) -- guest c: 203.0.113.163/32
//!   `-- kernel guests: a macvlan of enp9s0 moved into a netns of its own
//! ```
//!
//! No NAT network: the package tests are about the service, not the
//! datapath's reach, which the namespace suite covers.
//!
//! Unlike a [`Lab`], whose host namespace takes everything with it when
//! it is deleted, the root namespace stays: dropping a `HostLab` deletes
//! the uplink (and with it the macvtaps and macvlans on it, the shim and
//! mvbridge's own links included, in whatever namespace they are), then
//! the guests' and the gateway's namespaces, then the name it gave the
//! root namespace. Routes, addresses and per-link settings go with the
//! uplink.
//!
//! [`Lab`]: crate::lab::Lab

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;

use crate::guest::Guest;
use crate::lab::{UPLINK, VmSpec, WIRE, boot_guest, replace_guest, spec_index, stock_config};
use crate::netns::Netns;
use crate::sh;

pub struct HostLab {
    pub id: String,
    /// A handle on the root namespace, under a name of /run/netns (`ip
    /// netns attach`), so everything that runs commands in a [`Netns`]
    /// runs them there.
    pub host: Netns,
    pub gw: Netns,
    /// Scratch space: the guests' tap device nodes.
    pub dir: PathBuf,
    pub specs: Vec<VmSpec>,
    /// One namespace per spec, in the same order.
    guest_ns: Vec<Netns>,
    guests: Vec<Guest>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl HostLab {
    /// The gateway and the guests' namespaces, but no uplink yet: the
    /// host as a service finds it at boot when the NIC has not appeared.
    /// [`HostLab::add_uplink`] plugs it in.
    pub fn without_uplink(specs: Vec<VmSpec>) -> Result<HostLab> {
        let id = format!(
            "mvbt-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let dir = PathBuf::from(format!("/tmp/{id}"));
        std::fs::create_dir_all(&dir)?;
        let root = format!("{id}-root");
        sh::run(&[
            "ip",
            "netns",
            "attach",
            &root,
            &std::process::id().to_string(),
        ])?;
        let mut lab = HostLab {
            host: Netns::borrowed(&root),
            gw: Netns::new(&format!("{id}-gw"))?,
            dir,
            specs: Vec::new(),
            guest_ns: Vec::new(),
            guests: Vec::new(),
            id,
        };
        quiet_dad(&lab.gw)?;
        for spec in specs {
            lab.add_guest_ns(spec)?;
        }
        Ok(lab)
    }

    /// The whole lab: uplink, gateway, and the guests whose macvtaps the
    /// lab makes (as libvirt would) running.
    pub fn new(specs: Vec<VmSpec>) -> Result<HostLab> {
        let mut lab = HostLab::without_uplink(specs)?;
        lab.add_uplink()?;
        Ok(lab)
    }

    fn add_guest_ns(&mut self, spec: VmSpec) -> Result<()> {
        let ns = Netns::new(&format!("{}-vm-{}", self.id, spec.key))?;
        quiet_dad(&ns)?;
        self.specs.push(spec);
        self.guest_ns.push(ns);
        Ok(())
    }

    /// The uplink (a veth pair to the gateway) with the host's addresses
    /// and routes, then the macvtaps the lab makes and their guests.
    pub fn add_uplink(&mut self) -> Result<()> {
        let (host, gw) = (&self.host, &self.gw);
        host.ipw(&format!(
            "link add {UPLINK} type veth peer name {WIRE} netns {}",
            gw.name
        ))?;
        // Before the link comes up: its link-local address is usable at
        // once (DAD would hold it back for a second or two).
        host.sysctl(&format!("net.ipv6.conf.{UPLINK}.accept_dad"), "0")?;
        gw.ipw(&format!("addr add 203.0.113.129/26 dev {WIRE}"))?;
        gw.ipw(&format!("addr add 2001:db8:0:1::1/64 dev {WIRE}"))?;
        gw.ipw(&format!("addr add fe80::1/64 dev {WIRE}"))?;
        gw.ipw(&format!("link set {WIRE} up"))?;
        host.ipw(&format!("addr add 203.0.113.157/32 dev {UPLINK}"))?;
        host.ipw(&format!("addr add 2001:db8:0:1::2/64 dev {UPLINK} nodad"))?;
        host.ipw(&format!("link set {UPLINK} up"))?;
        host.ipw(&format!(
            "route add default via 203.0.113.129 dev {UPLINK} onlink"
        ))?;
        host.ipw(&format!("-6 route add default via fe80::1 dev {UPLINK}"))?;
        let made_here: Vec<VmSpec> = self
            .specs
            .iter()
            .filter(|s| !s.created_by_mvbridge && !s.kernel)
            .cloned()
            .collect();
        for spec in made_here {
            self.host.ipw(&format!(
                "link add link {UPLINK} name {} address {} type macvtap mode bridge",
                spec.interface, spec.mac
            ))?;
            self.host.ipw(&format!("link set {} up", spec.interface))?;
            self.start_guest(spec.key)?;
        }
        Ok(())
    }

    /// Starts the emulator for VM `key` on its macvtap (which must exist:
    /// for a VM mvbridge creates, once it did) and configures the guest.
    pub fn start_guest(&mut self, key: &str) -> Result<()> {
        let spec = self.spec(key).clone();
        let ns = self.guest(key);
        let guest = boot_guest(&self.host, &spec, ns, &self.dir, false)?;
        replace_guest(&mut self.guests, guest);
        Ok(())
    }

    /// A kernel guest (a container's macvlan): a bridge-mode macvlan on
    /// the uplink, moved into a namespace of its own (named
    /// [`HostLab::netns_of`]) and named eth0 there.
    pub fn add_kernel_guest(&mut self, mut spec: VmSpec) -> Result<()> {
        spec.kernel = true;
        spec.interface = "eth0".into();
        let key = spec.key;
        self.add_guest_ns(spec.clone())?;
        let ns = self.guest(key);
        let tmp = format!("kvm-{key}");
        self.host.ipw(&format!(
            "link add link {UPLINK} name {tmp} address {} type macvlan mode bridge",
            spec.mac
        ))?;
        self.host
            .ipw(&format!("link set {tmp} netns {}", ns.name))?;
        ns.ipw(&format!("link set {tmp} name eth0"))?;
        stock_config(ns, &spec)
    }

    /// The `ip netns` name of VM `key`'s namespace (`netns` in mvbridge's
    /// config, for a kernel guest).
    pub fn netns_of(&self, key: &str) -> String {
        format!("{}-vm-{key}", self.id)
    }

    pub fn spec(&self, key: &str) -> &VmSpec {
        &self.specs[spec_index(&self.specs, key)]
    }

    pub fn guest(&self, key: &str) -> &Netns {
        &self.guest_ns[spec_index(&self.specs, key)]
    }
}

impl Drop for HostLab {
    fn drop(&mut self) {
        self.guests.clear();
        // Synchronously, unlike a namespace's deletion: the next test may
        // make an uplink by the same name at once.
        let _ = self.host.ip(&["link", "del", UPLINK]);
        self.guest_ns.clear();
        // The gateway's namespace goes with its handle, after this. Of the
        // root namespace only the name goes.
        let _ = sh::output(&["ip", "netns", "del", &self.host.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// No duplicate address detection in `ns`: nothing here is duplicated,
/// and it would hold every new IPv6 address back for a second or two.
fn quiet_dad(ns: &Netns) -> Result<()> {
    for key in ["all", "default"] {
        ns.sysctl(&format!("net.ipv6.conf.{key}.accept_dad"), "0")?;
    }
    Ok(())
}
