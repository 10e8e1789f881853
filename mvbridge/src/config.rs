//! The configuration file: parsing and every check that can be made
//! without touching the kernel.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use thiserror::Error;

pub use crate::datapath::hooks::AttachSetting;

pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/mvbridge";
pub const DEFAULT_SHIM: &str = "mvb0";
pub const DEFAULT_PIDFILE: &str = "/run/mvbridge.pid";
pub const DEFAULT_RESYNC_SECONDS: u64 = 5;
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";
/// Where the daemon keeps the VMs libvirt declared, for `status` and
/// `check` (other processes) and for its own next start.
pub const DEFAULT_LIBVIRT_STATE: &str = "/run/mvbridge/libvirt.json";

/// A configuration that parsed and passed every static check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub uplink: String,
    pub bpffs: PathBuf,
    /// The host's addresses; `None` means "read them from the uplink".
    pub host_addresses: Option<Vec<IpAddr>>,
    pub shim: Shim,
    pub vms: Vec<Vm>,
    /// Where the OpenMetrics endpoint listens, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the whole kernel state is checked against the config, to
    /// catch changes that send no netlink event (a program detached by hand).
    pub resync_seconds: u64,
    /// Where the daemon writes its PID, for `mvbridge reload`.
    pub pidfile: PathBuf,
    /// Forward the programs' own debug events (drops, with reason and
    /// link) to the log. Off by default: it costs a little per drop.
    pub ebpf_log: bool,
    /// How hooks are attached: TCX where the kernel has it ("auto"), or
    /// forced.
    pub attach: AttachSetting,
    /// Expedite the kernel's RCU grace periods while TCX hooks change
    /// (see [`crate::kernel::rcu`]).
    pub expedite_rcu: bool,
    /// Learn VMs from libvirt's domains too (`[libvirt]`); `None`: off.
    pub libvirt: Option<Libvirt>,
}

/// `[libvirt]`: VMs declared in their libvirt domains' metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Libvirt {
    /// The connection, opened read-only.
    pub uri: String,
    /// Where the daemon writes the domains it knows (JSON).
    pub state_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shim {
    pub name: String,
    pub mac: Option<MacAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    pub name: String,
    /// The macvtap's name. An adopted VM is matched by name, by `mac`, or by
    /// both when both are given (libvirt renumbers macvtapN on every start,
    /// so its VMs are best matched by MAC alone).
    pub interface: Option<String>,
    /// True: mvbridge creates the macvtap; false: it adopts an existing one.
    pub create: bool,
    pub mac: Option<MacAddr>,
    pub addresses: Vec<IpAddr>,
    /// Prefixes inside which the VM's addresses may be learnt from its own
    /// traffic; empty: no learning.
    pub learn: Vec<Prefix>,
    /// The network namespace (`ip netns` name) the VM's link lives in, for
    /// kernel guests and containers on a macvlan; `None`: the host's.
    pub netns: Option<String>,
    /// Where it was declared.
    pub origin: VmOrigin,
}

/// Where a VM was declared: a `[[vm]]` section, or the metadata of a
/// libvirt domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VmOrigin {
    #[default]
    Config,
    Libvirt {
        domain: String,
        uuid: String,
    },
}

impl Vm {
    /// How the VM is named in messages: where it was declared.
    pub fn label(&self) -> String {
        match &self.origin {
            VmOrigin::Config => format!("[[vm]] {:?}", self.name),
            VmOrigin::Libvirt { domain, .. } => format!(
                "libvirt domain {domain:?} interface {}",
                self.mac.map(|m| m.to_string()).unwrap_or_default()
            ),
        }
    }

    /// How the VM is named in messages: its interface or its MAC.
    pub fn describe_link(&self) -> String {
        match (&self.interface, self.mac) {
            (Some(i), _) => format!("interface {i:?}"),
            (None, Some(m)) => format!("a macvtap with MAC {m}"),
            (None, None) => "no link".to_owned(),
        }
    }
}

/// An address prefix such as `203.0.113.160/28`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(*a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(*a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a prefix (want address/length)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a prefix ({addr:?} is not an address)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?} is not a prefix (length must be 0..={max})"))?;
        Ok(Prefix { addr, len })
    }
}

/// An Ethernet address as written in the config (`52:54:00:12:34:56`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (want six hex bytes like 52:54:00:12:34:56)"
            ));
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(format!(
                    "{s:?} is not a MAC address (each byte takes two hex digits)"
                ));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{s:?} is not a MAC address ({part:?} is not hex)"))?;
        }
        if mac[0] & 1 == 1 {
            return Err(format!(
                "{s} is a multicast MAC address; a NIC needs a unicast one"
            ));
        }
        if mac == [0; 6] {
            return Err("00:00:00:00:00:00 is not a usable MAC address".into());
        }
        Ok(MacAddr(mac))
    }
}

/// Why a configuration was rejected. Each message names the offending
/// field so the admin can fix it without reading code.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} does not parse: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    uplink: String,
    bpffs: Option<PathBuf>,
    host_addresses: Option<Vec<String>>,
    metrics_listen: Option<String>,
    resync_seconds: Option<u64>,
    pidfile: Option<PathBuf>,
    #[serde(default)]
    ebpf_log: bool,
    #[serde(default)]
    attach: AttachSetting,
    expedite_rcu: Option<bool>,
    shim: Option<RawShim>,
    #[serde(default)]
    vm: Vec<RawVm>,
    libvirt: Option<RawLibvirt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLibvirt {
    #[serde(default)]
    enable: bool,
    uri: Option<String>,
    state_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShim {
    name: Option<String>,
    mac: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: String,
    interface: Option<String>,
    #[serde(default)]
    create: bool,
    mac: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    learn: Vec<String>,
    netns: Option<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            Problem::Syntax(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            Problem::Meaning(message) => ConfigError::Invalid {
                path: path.to_owned(),
                message,
            },
        })
    }

    /// Parses and checks a config held in memory.
    pub fn parse(text: &str) -> Result<Config, Problem> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| Problem::Syntax(e.to_string().trim().to_owned()))?;
        raw.check().map_err(Problem::Meaning)
    }
}

/// A config that could not be read as TOML, or that TOML accepted but that
/// makes no sense.
#[derive(Debug)]
pub enum Problem {
    Syntax(String),
    Meaning(String),
}

impl RawConfig {
    fn check(self) -> Result<Config, String> {
        check_ifname("uplink", &self.uplink)?;
        let bpffs = self.bpffs.unwrap_or_else(|| PathBuf::from(DEFAULT_BPFFS));
        if !bpffs.is_absolute() {
            return Err(format!("bpffs = {bpffs:?} must be an absolute path"));
        }
        let host_addresses = match self.host_addresses {
            Some(list) => {
                let mut out = Vec::new();
                for a in &list {
                    out.push(parse_address("host_addresses", a)?);
                }
                Some(out)
            }
            None => None,
        };
        let shim = self.shim.unwrap_or(RawShim {
            name: None,
            mac: None,
        });
        let shim = Shim {
            name: shim.name.unwrap_or_else(|| DEFAULT_SHIM.to_owned()),
            mac: shim
                .mac
                .map(|m| m.parse().map_err(|e| format!("[shim] mac: {e}")))
                .transpose()?,
        };
        check_ifname("[shim] name", &shim.name)?;
        if shim.name == self.uplink {
            return Err(format!("[shim] name {:?} is the uplink's name", shim.name));
        }

        let mut vms = Vec::new();
        for raw in self.vm {
            vms.push(raw.check()?);
        }
        let metrics_listen = self
            .metrics_listen
            .map(|m| {
                m.parse::<SocketAddr>().map_err(|_| {
                    format!(
                        "metrics_listen = {m:?} is not an address:port such as \"127.0.0.1:9810\""
                    )
                })
            })
            .transpose()?;
        let resync_seconds = self.resync_seconds.unwrap_or(DEFAULT_RESYNC_SECONDS);
        if !(1..=3600).contains(&resync_seconds) {
            return Err(format!(
                "resync_seconds = {resync_seconds} must be between 1 and 3600"
            ));
        }
        let pidfile = self
            .pidfile
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PIDFILE));
        if !pidfile.is_absolute() {
            return Err(format!("pidfile = {pidfile:?} must be an absolute path"));
        }
        let libvirt = match self.libvirt {
            Some(raw) if raw.enable => {
                let uri = raw.uri.unwrap_or_else(|| DEFAULT_LIBVIRT_URI.to_owned());
                if uri.trim().is_empty() {
                    return Err("[libvirt] uri must not be empty".into());
                }
                let state_file = raw
                    .state_file
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_LIBVIRT_STATE));
                if !state_file.is_absolute() {
                    return Err(format!(
                        "[libvirt] state_file = {state_file:?} must be an absolute path"
                    ));
                }
                Some(Libvirt { uri, state_file })
            }
            _ => None,
        };
        let config = Config {
            uplink: self.uplink,
            bpffs,
            host_addresses,
            shim,
            vms,
            metrics_listen,
            resync_seconds,
            pidfile,
            ebpf_log: self.ebpf_log,
            attach: self.attach,
            expedite_rcu: self.expedite_rcu.unwrap_or(true),
            libvirt,
        };
        check_unique(&config)?;
        Ok(config)
    }
}

impl RawVm {
    fn check(self) -> Result<Vm, String> {
        let at = format!("[[vm]] {:?}", self.name);
        if self.name.trim().is_empty() {
            return Err("[[vm]] name must not be empty".into());
        }
        if let Some(i) = &self.interface {
            check_ifname(&format!("{at} interface"), i)?;
        }
        let mac = self
            .mac
            .map(|m| m.parse::<MacAddr>().map_err(|e| format!("{at} mac: {e}")))
            .transpose()?;
        if self.create && (mac.is_none() || self.interface.is_none()) {
            return Err(format!(
                "{at} has create = true but no {}: mvbridge needs both to create its macvtap",
                if mac.is_none() { "mac" } else { "interface" }
            ));
        }
        if self.interface.is_none() && mac.is_none() {
            return Err(format!(
                "{at} needs an interface, a mac, or both, to find its macvtap"
            ));
        }
        let mut addresses = Vec::new();
        for a in &self.addresses {
            addresses.push(parse_address(&format!("{at} addresses"), a)?);
        }
        let mut learn = Vec::new();
        for p in &self.learn {
            learn.push(
                p.parse::<Prefix>()
                    .map_err(|e| format!("{at} learn: {e}"))?,
            );
        }
        if addresses.is_empty() && learn.is_empty() {
            return Err(format!("{at} has no addresses (and learns none)"));
        }
        if let Some(ns) = &self.netns {
            let ok = !ns.is_empty() && !ns.contains('/') && ns != "." && ns != "..";
            if !ok {
                return Err(format!("{at} netns = {ns:?} is not an `ip netns` name"));
            }
            if self.create {
                return Err(format!(
                    "{at} lives in netns {ns:?}: mvbridge only creates macvtaps in the host's namespace"
                ));
            }
        }
        Ok(Vm {
            name: self.name,
            interface: self.interface,
            create: self.create,
            mac,
            addresses,
            learn,
            netns: self.netns,
            origin: VmOrigin::Config,
        })
    }
}

pub(crate) fn check_ifname(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} = {name:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"
        ))
    }
}

/// A host or VM address: unicast, one family. Link-local addresses are
/// allowed: a VM owns the one its MAC gives it anyway, and may be given
/// others (a stable-privacy one, say) so nobody else can claim them.
pub(crate) fn parse_address(what: &str, text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text.parse().map_err(|_| {
        if text.contains('/') {
            format!("{what}: {text:?} has a prefix length; give the bare address")
        } else {
            format!("{what}: {text:?} is not an IP address")
        }
    })?;
    let bad = |why: &str| Err(format!("{what}: {ip} is {why}"));
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast() {
                return bad("not a unicast address a host or VM can own");
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Err(format!(
                    "{what}: {ip} is an IPv4 address in IPv6 clothing; write it as {v4}"
                ));
            }
            if v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() {
                return bad("not a unicast address a host or VM can own");
            }
        }
    }
    Ok(ip)
}

fn check_unique(config: &Config) -> Result<(), String> {
    let mut names = HashMap::new();
    let mut interfaces = HashMap::new();
    let mut macs = HashMap::new();
    let mut owners: HashMap<IpAddr, String> = HashMap::new();
    for addr in config.host_addresses.iter().flatten() {
        if owners.insert(*addr, "the host".into()).is_some() {
            return Err(format!("host_addresses lists {addr} twice"));
        }
    }
    for vm in &config.vms {
        if names.insert(vm.name.as_str(), ()).is_some() {
            return Err(format!("two [[vm]] entries are named {:?}", vm.name));
        }
        if let Some(interface) = &vm.interface {
            let host_side = vm.netns.is_none();
            if host_side && (interface == &config.uplink || interface == &config.shim.name) {
                return Err(format!(
                    "[[vm]] {:?} interface {:?} is the uplink or the shim",
                    vm.name, interface
                ));
            }
            // Names are per namespace: two containers may both have eth0.
            let key = (vm.netns.as_deref(), interface.as_str());
            if let Some(prev) = interfaces.insert(key, vm.name.as_str()) {
                return Err(format!(
                    "[[vm]] {:?} and {:?} both use interface {:?}",
                    prev, vm.name, interface
                ));
            }
        }
        if let Some(mac) = vm.mac {
            if Some(mac) == config.shim.mac {
                return Err(format!("[[vm]] {:?} uses the shim's MAC {mac}", vm.name));
            }
            if let Some(prev) = macs.insert(mac, vm.name.as_str()) {
                return Err(format!(
                    "[[vm]] {:?} and {:?} both use MAC {mac}",
                    prev, vm.name
                ));
            }
        }
        for addr in &vm.addresses {
            let me = format!("[[vm]] {:?}", vm.name);
            if let Some(prev) = owners.insert(*addr, me.clone()) {
                return Err(if prev == me {
                    format!("{me} lists {addr} twice")
                } else {
                    format!("{addr} is claimed by both {prev} and {me}")
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
uplink = "enp9s0"
bpffs = "/sys/fs/bpf/mvbridge"
[shim]
name = "mvb0"
[[vm]]
name = "bbb"
interface = "macvtap0"
addresses = ["203.0.113.161"]
[[vm]]
name = "web"
interface = "mvt-web"
create = true
mac = "52:54:00:12:34:56"
addresses = ["203.0.113.162"]
"#;

    fn err(text: &str) -> String {
        match Config::parse(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(Problem::Syntax(m) | Problem::Meaning(m)) => m,
        }
    }

    #[test]
    fn the_readme_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.uplink, "enp9s0");
        assert_eq!(c.shim.name, "mvb0");
        assert_eq!(c.vms.len(), 2);
        assert!(!c.vms[0].create);
        assert_eq!(
            c.vms[1].mac,
            Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert_eq!(
            c.vms[1].addresses,
            vec!["203.0.113.162".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.host_addresses, None);
    }

    #[test]
    fn a_vm_may_own_a_link_local_address() {
        let c = Config::parse(
            "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"fe80::1234:5678\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.vms[0].addresses[0],
            "fe80::1234:5678".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn both_families_parse() {
        let c = Config::parse(
            "uplink = \"eth0\"\nhost_addresses = [\"203.0.113.157\", \"2001:db8:0:1::2\", \"fe80::2\"]\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"203.0.113.161\", \"2001:db8:0:1::161\"]\n",
        )
        .unwrap();
        assert_eq!(c.host_addresses.as_ref().map(Vec::len), Some(3));
        assert!(c.vms[0].addresses[1].is_ipv6());
    }

    #[test]
    fn prefixes_contain_what_they_should() {
        let p: Prefix = "203.0.113.160/28".parse().unwrap();
        assert!(p.contains(&"203.0.113.175".parse().unwrap()));
        assert!(!p.contains(&"203.0.113.176".parse().unwrap()));
        assert!(!p.contains(&"2001:db8::1".parse().unwrap()));
        let p6: Prefix = "2001:db8:0:1::/64".parse().unwrap();
        assert!(p6.contains(&"2001:db8:0:1::ffff".parse().unwrap()));
        assert!(!p6.contains(&"2001:db8:0:2::1".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn a_vm_can_be_matched_by_mac_alone_and_learn() {
        let c = Config::parse(
            "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\nmac = \"52:54:00:00:00:01\"\nlearn = [\"203.0.113.160/28\"]\n",
        )
        .unwrap();
        assert_eq!(c.vms[0].interface, None);
        assert!(c.vms[0].addresses.is_empty());
        assert_eq!(c.vms[0].learn[0].len, 28);
    }

    #[test]
    fn libvirt_is_off_unless_enabled_and_has_defaults() {
        assert_eq!(Config::parse("uplink = \"eth0\"\n").unwrap().libvirt, None);
        let off = Config::parse("uplink = \"eth0\"\n[libvirt]\nenable = false\n").unwrap();
        assert_eq!(off.libvirt, None);
        // The README's one line.
        let on = Config::parse("uplink = \"eth0\"\nlibvirt.enable = true\n").unwrap();
        assert_eq!(
            on.libvirt,
            Some(Libvirt {
                uri: DEFAULT_LIBVIRT_URI.into(),
                state_file: PathBuf::from(DEFAULT_LIBVIRT_STATE),
            })
        );
        let custom = Config::parse(
            "uplink = \"eth0\"\n[libvirt]\nenable = true\nuri = \"qemu+ssh://x/system\"\nstate_file = \"/tmp/lv.json\"\n",
        )
        .unwrap();
        let lv = custom.libvirt.unwrap();
        assert_eq!(lv.uri, "qemu+ssh://x/system");
        assert_eq!(lv.state_file, PathBuf::from("/tmp/lv.json"));
    }

    #[test]
    fn defaults_apply() {
        let c = Config::parse("uplink = \"eth0\"\n").unwrap();
        assert_eq!(c.bpffs, PathBuf::from(DEFAULT_BPFFS));
        assert_eq!(c.resync_seconds, DEFAULT_RESYNC_SECONDS);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.shim.name, DEFAULT_SHIM);
        assert!(c.vms.is_empty());
    }

    #[test]
    fn bad_input_is_named() {
        let cases: &[(&str, &str)] = &[
            ("uplink = ", "TOML parse error"),
            ("uplink = \"eth0\"\nfoo = 1\n", "unknown field `foo`"),
            ("uplink = \"a/b\"\n", "not a valid interface name"),
            ("uplink = \"eth0\"\nbpffs = \"rel\"\n", "absolute"),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"1.2.3\"]\n",
                "\"1.2.3\" is not an IP address",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"203.0.113.5/26\"]\n",
                "prefix length",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"224.0.0.1\"]\n",
                "not a unicast address",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\ncreate = true\naddresses = [\"203.0.113.5\"]\n",
                "no mac",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\nmac = \"52:54:00:zz:00:01\"\naddresses = [\"203.0.113.5\"]\n",
                "is not hex",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\nmac = \"01:00:5e:00:00:01\"\naddresses = [\"203.0.113.5\"]\n",
                "multicast MAC",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"203.0.113.5\"]\n[[vm]]\nname = \"b\"\ninterface = \"t1\"\naddresses = [\"203.0.113.5\"]\n",
                "203.0.113.5 is claimed by both [[vm]] \"a\" and [[vm]] \"b\"",
            ),
            (
                "uplink = \"eth0\"\nhost_addresses = [\"203.0.113.5\"]\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"203.0.113.5\"]\n",
                "claimed by both the host",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"203.0.113.5\"]\n[[vm]]\nname = \"a\"\ninterface = \"t1\"\naddresses = [\"203.0.113.6\"]\n",
                "two [[vm]] entries are named \"a\"",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"203.0.113.5\"]\n[[vm]]\nname = \"b\"\ninterface = \"t0\"\naddresses = [\"203.0.113.6\"]\n",
                "both use interface \"t0\"",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\nmac = \"52:54:00:00:00:01\"\naddresses = [\"203.0.113.5\"]\n[[vm]]\nname = \"b\"\ninterface = \"t1\"\nmac = \"52:54:00:00:00:01\"\naddresses = [\"203.0.113.6\"]\n",
                "both use MAC 52:54:00:00:00:01",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"eth0\"\naddresses = [\"203.0.113.5\"]\n",
                "is the uplink or the shim",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = []\n",
                "has no addresses",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\naddresses = [\"203.0.113.5\"]\n",
                "needs an interface, a mac, or both",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\nmac = \"52:54:00:00:00:01\"\nlearn = [\"203.0.113.0/33\"]\n",
                "length must be 0..=32",
            ),
            (
                "uplink = \"eth0\"\n[libvirt]\nenable = true\nsocket = \"x\"\n",
                "unknown field `socket`",
            ),
            (
                "uplink = \"eth0\"\n[libvirt]\nenable = true\nuri = \" \"\n",
                "[libvirt] uri must not be empty",
            ),
            (
                "uplink = \"eth0\"\n[libvirt]\nenable = true\nstate_file = \"rel.json\"\n",
                "[libvirt] state_file = \"rel.json\" must be an absolute path",
            ),
            (
                "uplink = \"eth0\"\nmetrics_listen = \"localhost\"\n",
                "is not an address:port",
            ),
            (
                "uplink = \"eth0\"\nattach = \"netlink\"\n",
                "unknown variant `netlink`, expected one of `auto`, `tcx`, `tc`",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"ff02::1\"]\n",
                "not a unicast address",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"2001:db8::g\"]\n",
                "\"2001:db8::g\" is not an IP address",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"::ffff:203.0.113.5\"]\n",
                "write it as 203.0.113.5",
            ),
            (
                "uplink = \"eth0\"\n[[vm]]\nname = \"a\"\ninterface = \"t0\"\naddresses = [\"2001:db8::5\", \"2001:DB8:0::5\"]\n",
                "lists 2001:db8::5 twice",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "for {text:?}: {got:?} lacks {want:?}");
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9:./-]{0,20}".prop_map(|s| format!("\"{s}\"")),
                any::<i64>().prop_map(|n| n.to_string()),
                Just("true".to_owned()),
                Just("[\"203.0.113.5\", \"2001:db8::5\"]".to_owned()),
                "[ -~]{0,12}",
            ]
        }

        fn key() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "uplink",
                "bpffs",
                "host_addresses",
                "metrics_listen",
                "resync_seconds",
                "pidfile",
                "ebpf_log",
                "attach",
                "expedite_rcu",
                "name",
                "interface",
                "mac",
                "addresses",
                "create",
                "learn",
                "colour",
            ])
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Whatever the file holds, parsing returns (never panics), and a
            /// rejection says something.
            #[test]
            fn any_text_gets_an_answer(text in "[ -~\n]{0,300}") {
                if let Err(Problem::Syntax(m) | Problem::Meaning(m)) = Config::parse(&text) {
                    prop_assert!(!m.is_empty());
                }
            }

            /// Config-shaped input: top-level keys, a [shim] and [[vm]]
            /// tables with random values. Accepted configs satisfy the
            /// invariants the daemon relies on.
            #[test]
            fn config_shaped_input(
                top in proptest::collection::vec((key(), value()), 0..5),
                vms in proptest::collection::vec(proptest::collection::vec((key(), value()), 0..6), 0..3),
            ) {
                let mut text = String::from("uplink = \"eth0\"\n");
                for (k, v) in &top {
                    text.push_str(&format!("{k} = {v}\n"));
                }
                for vm in &vms {
                    text.push_str("[[vm]]\n");
                    for (k, v) in vm {
                        text.push_str(&format!("{k} = {v}\n"));
                    }
                }
                match Config::parse(&text) {
                    Ok(c) => {
                        let mut seen = std::collections::HashSet::new();
                        for vm in &c.vms {
                            prop_assert!(vm.interface.is_some() || vm.mac.is_some());
                            prop_assert!(!vm.addresses.is_empty() || !vm.learn.is_empty());
                            for a in &vm.addresses {
                                prop_assert!(seen.insert(*a), "{a} accepted twice");
                            }
                        }
                        prop_assert!(c.bpffs.is_absolute());
                    }
                    Err(Problem::Syntax(m) | Problem::Meaning(m)) => prop_assert!(!m.is_empty()),
                }
            }
        }
    }
}
