//! Running mvbridge's real programs on crafted frames with the kernel's
//! BPF_PROG_TEST_RUN: loaded (not attached) exactly as the daemon loads
//! them, with tables filled from real links, inside a namespace whose
//! ifindexes the programs see.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use aya::programs::{TestRun, TestRunOptions};
use mvbridge::config::Config;
use mvbridge::control::contents::Contents;
use mvbridge::control::learning::Learnt;
use mvbridge::control::plan;
use mvbridge::control::world::{Namespace, Observer, World};
use mvbridge::datapath::bpffs::{self, PinDir};
use mvbridge::datapath::maps::PinnedMaps;
use mvbridge::datapath::object::{Datapath, Role};
use mvbridge::kernel::netlink::{Link, Netlink};
use mvbridge::kernel::netns::NetnsId;
use mvbridge_common::stats::{DropReason, Path as StatPath, Proto};

const SHIM_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0f];
/// The namespace a bridged bench VM is planned in (its link stays in the
/// bench's: the programs see no namespaces).
const BRIDGED_NS: &str = "bench-bridged";

/// `TC_ACT_UNSPEC` (pass on), `TC_ACT_SHOT`, `TC_ACT_REDIRECT`.
pub const PASS: i32 = -1;
pub const SHOT: i32 = 2;
pub const REDIRECT: i32 = 7;

/// The programs and their tables, ready for test runs. Must be used on a
/// thread inside the namespace that holds the links.
pub struct Bench {
    datapath: Datapath,
    pub maps: PinnedMaps,
    pub links: BTreeMap<String, Link>,
    /// The namespace as the daemon would see it.
    world: World,
}

/// A VM for the bench's tables: its link's name, slot, addresses and
/// whether it learns.
pub struct BenchVm<'a> {
    pub interface: &'a str,
    pub slot: u32,
    pub addresses: &'a [IpAddr],
    pub learns: bool,
    /// Taken for a VM whose link is in another namespace (reached through
    /// the shim).
    pub bridged: bool,
}

impl Bench {
    /// Loads the programs with their maps pinned under `bpffs`, and fills
    /// the tables as the daemon's plan would for `uplink` (host addresses,
    /// routers and neighbours read from it) and `vms`.
    pub fn new(bpffs_dir: &Path, uplink: &str, vms: &[BenchVm<'_>]) -> Result<Bench> {
        let pins = PinDir::new(bpffs_dir);
        bpffs::ensure(&pins.dir)?;
        std::fs::create_dir_all(pins.maps())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let config =
            Config::parse(&format!("uplink = \"{uplink}\"\n")).map_err(|e| anyhow!("{e:?}"))?;
        let world = rt.block_on(async {
            let mut observer = Observer::new(Netlink::connect()?);
            Ok::<_, anyhow::Error>(observer.observe(&config).await?)
        })?;
        let links: BTreeMap<String, Link> = world
            .links
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
        let datapath = Datapath::load(&pins.maps(), false)?;
        PinnedMaps::create_loader_maps(&pins)?;
        let maps = PinnedMaps::open(&pins)?;
        let mut bench = Bench {
            datapath,
            maps,
            links,
            world,
        };
        bench.fill(uplink, vms)?;
        Ok(bench)
    }

    /// The ring the programs report learnable addresses on.
    pub fn learn_ring(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.datapath.take_learn_ring()
    }

    pub fn ifindex(&self, name: &str) -> u32 {
        self.links[name].index
    }

    pub fn mac(&self, name: &str) -> [u8; 6] {
        self.links[name].mac.expect("link has a MAC")
    }

    /// Runs `role`'s program on `frame` as sent on `ifname`'s egress;
    /// returns its verdict and the frame as it left the program.
    pub fn run(&mut self, role: Role, ifname: &str, frame: &[u8]) -> Result<(i32, Vec<u8>)> {
        // struct __sk_buff, with the ifindex the program reads at 40.
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&self.ifindex(ifname).to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.datapath.program(role)?;
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .map_err(|e| {
                anyhow!(
                    "test run of {} bytes: {}",
                    frame.len(),
                    mvbridge::errno::chain(&e)
                )
            })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value as i32, out))
    }

    /// Runs `frame` through `role`'s program (or the do-nothing baseline
    /// when `role` is `None`) `repeat` times in the kernel; the kernel's
    /// average time per run.
    pub fn time(
        &mut self,
        role: Option<Role>,
        ifname: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<std::time::Duration> {
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&self.ifindex(ifname).to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 256];
        let prog = match role {
            Some(r) => self.datapath.program(r)?,
            None => self.datapath.baseline()?,
        };
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat,
                ..Default::default()
            })
            .map_err(|e| anyhow!("timed test run: {}", mvbridge::errno::chain(&e)))?;
        Ok(result.duration)
    }

    /// The MAC the tables give the shim (there is no shim link: the
    /// programs only compare MACs).
    pub fn shim_mac(&self) -> [u8; 6] {
        SHIM_MAC
    }

    /// Replaces the tables with what the daemon's plan makes of `uplink`
    /// and `vms`, with the bench's slots.
    pub fn fill(&mut self, uplink: &str, vms: &[BenchVm<'_>]) -> Result<()> {
        self.fill_with_others(uplink, vms, 0).map(|_| ())
    }

    /// `fill`, plus `others` VMs more on macvtaps the programs never see
    /// (links the plan is told about, with ifindexes from 100,000 up), one
    /// address each: an IPv6 address in 2001:db8:2::/64, and for the first
    /// 380 an IPv4 address too (192.0.2.0/24, 198.51.100.128/25: the
    /// documentation prefixes hold no more). The tables then hold as
    /// many MACs, links and addresses as that many VMs would make.
    /// Returns how long writing the tables took (planning not included).
    pub fn fill_with_others(
        &mut self,
        uplink: &str,
        vms: &[BenchVm<'_>],
        others: u32,
    ) -> Result<std::time::Duration> {
        let mut config = format!("uplink = \"{uplink}\"\n");
        let mut world = self.world.clone();
        let lower = self.links.get(uplink).context("no such uplink")?.index;
        let mut slots: BTreeMap<String, u32> = vms
            .iter()
            .map(|v| (v.interface.to_owned(), v.slot))
            .collect();
        let first_slot = vms.iter().map(|v| v.slot + 1).max().unwrap_or(0);
        for i in 0..others {
            let name = format!("other{i}");
            world.links.push(Link {
                index: 100_000 + i,
                name: name.clone(),
                mac: Some([0x52, 0x54, 0x04, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                kind: Some("macvtap".into()),
                lower: Some(lower),
                macvlan_mode: None,
                alias: None,
                up: true,
                allmulti: true,
                ipv6: None,
            });
            let mut addrs = vec![IpAddr::from(std::net::Ipv6Addr::new(
                0x2001,
                0xdb8,
                2,
                0,
                0,
                0,
                (i >> 16) as u16,
                i as u16,
            ))];
            if i < 254 {
                addrs.push(IpAddr::from([192, 0, 2, 1 + i as u8]));
            } else if i < 380 {
                addrs.push(IpAddr::from([198, 51, 100, 128 + (i - 254) as u8]));
            }
            let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
            config.push_str(&format!(
                "[[vm]]\nname = \"{name}\"\ninterface = \"{name}\"\naddresses = [{}]\n",
                list.join(", ")
            ));
            slots.insert(name, first_slot + i);
        }
        for v in vms {
            let list: Vec<String> = v.addresses.iter().map(|a| format!("\"{a}\"")).collect();
            config.push_str(&format!(
                "[[vm]]\nname = \"{0}\"\ninterface = \"{0}\"\naddresses = [{1}]\n",
                v.interface,
                list.join(", ")
            ));
            if v.learns {
                config.push_str("learn = [\"0.0.0.0/0\"]\n");
            }
            if v.bridged {
                config.push_str(&format!("netns = \"{BRIDGED_NS}\"\n"));
                let link = self
                    .links
                    .get(v.interface)
                    .context("no such VM link")?
                    .clone();
                world.links.retain(|l| l.index != link.index);
                world.namespaces.insert(
                    BRIDGED_NS.into(),
                    Namespace::Seen {
                        id: NetnsId { dev: 0, ino: 0 },
                        links: vec![link],
                    },
                );
            }
        }
        let config = Config::parse(&config).map_err(|e| anyhow!("bench config: {e:?}"))?;
        let plan = plan::plan(&config, &world, &Learnt::default())?;
        let problems = plan.all_problems();
        anyhow::ensure!(problems.is_empty(), "the bench's plan: {problems:?}");
        let shim = Link {
            index: 0,
            name: "shim".into(),
            mac: Some(SHIM_MAC),
            kind: None,
            lower: None,
            macvlan_mode: None,
            alias: None,
            up: false,
            allmulti: false,
            ipv6: None,
        };
        let t = std::time::Instant::now();
        self.maps.sync(&Contents::new(&plan, &shim, &slots))?;
        Ok(t.elapsed())
    }

    pub fn path_packets(&self, path: StatPath, proto: Proto) -> u64 {
        self.maps
            .path_counters()
            .into_iter()
            .find(|(p, q, _)| *p == path && *q == proto)
            .map(|(_, _, c)| c.packets)
            .unwrap_or(0)
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.maps
            .drop_counters()
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, n)| n)
            .unwrap_or(0)
    }
}
