//! The benchmark's report: what `cargo xtask bench` measured, typed, so
//! that the bench writes it and the smoke test reads it back through the
//! same definitions (`target/bench/bench.json`).
//!
//! The set of measurements is declared here, not counted: [`Setup::ALL`]
//! and [`Setup::guests`] say which guest runs in which setup,
//! [`Metric::ALL`] which figures each of them gets, [`pairs`] which ratios
//! are taken. A figure that was not produced is an error when the report is
//! built ([`Stat::of`]), never a NaN or a 0 in the file.

use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The ways users connect a host and its VMs today, and mvbridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setup {
    /// (a) No fix: host <-> VM goes out to the hoster's router and back.
    Hairpin,
    /// (b) The classic workaround: a host macvlan "shim" carrying the
    /// host's address, a /32 route per VM through it.
    ClassicShim,
    /// (c) mvbridge.
    Mvbridge,
    /// (d) A Linux bridge carrying the host's address, a routed /32 guest
    /// (what users do when they give up on macvtap).
    LinuxBridge,
    /// (e) The ceiling: the guest's link straight into the host's stack (a
    /// veth for kernel guests, a tap for emulated VMs), a /32 route.
    Ceiling,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::Hairpin,
        Setup::ClassicShim,
        Setup::Mvbridge,
        Setup::LinuxBridge,
        Setup::Ceiling,
    ];

    pub fn letter(self) -> char {
        match self {
            Setup::Hairpin => 'a',
            Setup::ClassicShim => 'b',
            Setup::Mvbridge => 'c',
            Setup::LinuxBridge => 'd',
            Setup::Ceiling => 'e',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Setup::Hairpin => "hairpin",
            Setup::ClassicShim => "classic shim",
            Setup::Mvbridge => "mvbridge",
            Setup::LinuxBridge => "Linux bridge",
            Setup::Ceiling => "ceiling",
        }
    }

    /// The guests measured in this setup. The hairpin only works for /32
    /// guests (a /26 guest cannot reach the host at all); the bridge and
    /// the ceiling route a /32 to the guest's own link.
    pub fn guests(self) -> &'static [Guest] {
        const ALL4: [Guest; 4] = [Guest::KERNEL26, Guest::KERNEL32, Guest::VM26, Guest::VM32];
        const ROUTED: [Guest; 2] = [Guest::KERNEL32, Guest::VM32];
        match self {
            Setup::ClassicShim | Setup::Mvbridge => &ALL4,
            Setup::Hairpin | Setup::LinuxBridge | Setup::Ceiling => &ROUTED,
        }
    }

    /// Whether host <-> guest crosses the rate-limited uplink at all.
    pub fn has_uplink(self) -> bool {
        self != Setup::Ceiling
    }
}

/// What plays the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestKind {
    /// A kernel guest (or container): a macvlan on the uplink in a
    /// namespace of its own (a veth in the bridge and the ceiling).
    Kernel,
    /// A VM: the guest emulator (`mvb-guest`, what qemu does with
    /// `-netdev tap`) with virtio-net headers and offloads, on a macvtap
    /// (a tap in the bridge and the ceiling).
    Vm,
}

/// The guest's stock network config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Prefix {
    /// The on-link subnet Ubuntu's installer writes.
    #[serde(rename = "/26")]
    Subnet26,
    /// A single address with an on-link gateway.
    #[serde(rename = "/32")]
    Single32,
}

impl Prefix {
    pub fn bits(self) -> u8 {
        match self {
            Prefix::Subnet26 => 26,
            Prefix::Single32 => 32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Guest {
    pub kind: GuestKind,
    pub prefix: Prefix,
}

impl Guest {
    pub const KERNEL26: Guest = Guest {
        kind: GuestKind::Kernel,
        prefix: Prefix::Subnet26,
    };
    pub const KERNEL32: Guest = Guest {
        kind: GuestKind::Kernel,
        prefix: Prefix::Single32,
    };
    pub const VM26: Guest = Guest {
        kind: GuestKind::Vm,
        prefix: Prefix::Subnet26,
    };
    pub const VM32: Guest = Guest {
        kind: GuestKind::Vm,
        prefix: Prefix::Single32,
    };

    /// The same kind of guest with a /32: what the routed setups have.
    pub fn routed(self) -> Guest {
        Guest {
            prefix: Prefix::Single32,
            ..self
        }
    }
}

impl fmt::Display for Guest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            GuestKind::Kernel => "kernel",
            GuestKind::Vm => "VM",
        };
        write!(f, "{kind} /{}", self.prefix.bits())
    }
}

/// One guest in one setup: a row of the data-path table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Case {
    pub setup: Setup,
    pub guest: Guest,
}

impl Case {
    pub fn new(setup: Setup, guest: Guest) -> Case {
        Case { setup, guest }
    }

    /// Every case the bench measures, in the order it measures them.
    pub fn all() -> Vec<Case> {
        Setup::ALL
            .iter()
            .flat_map(|s| s.guests().iter().map(|g| Case::new(*s, *g)))
            .collect()
    }

    /// Whether the VM's internet throughput is measured with and without
    /// a local bulk transfer (it costs 3 transfers a trial: only where the
    /// local traffic can take the uplink from the internet's).
    pub fn measures_internet(self) -> bool {
        self.guest.kind == GuestKind::Kernel
            && matches!(
                self.setup,
                Setup::Hairpin | Setup::ClassicShim | Setup::Mvbridge
            )
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}, {}",
            self.setup.letter(),
            self.setup.name(),
            self.guest
        )
    }
}

/// Which way is better for a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// The figures every case gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// TCP throughput, host -> guest (iperf3, one stream).
    HostToVmGbps,
    /// TCP throughput, guest -> host.
    VmToHostGbps,
    /// TCP throughput, a NAT'd VM behind the host -> guest.
    NatvmToVmGbps,
    /// CPU seconds the whole machine spent per GB moved host -> guest
    /// (other users' processes taken out).
    CpuSPerGbHostToVm,
    /// The same, guest -> host.
    CpuSPerGbVmToHost,
    /// Bytes the uplink's wire carried per GB moved host -> guest.
    UplinkBytesPerGb,
    /// 1-byte TCP request/response transactions per second.
    RrPerS,
    RrP50Us,
    RrP99Us,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::HostToVmGbps,
        Metric::VmToHostGbps,
        Metric::NatvmToVmGbps,
        Metric::CpuSPerGbHostToVm,
        Metric::CpuSPerGbVmToHost,
        Metric::UplinkBytesPerGb,
        Metric::RrPerS,
        Metric::RrP50Us,
        Metric::RrP99Us,
    ];

    /// The three throughput paths.
    pub const PATHS: [Metric; 3] = [
        Metric::HostToVmGbps,
        Metric::VmToHostGbps,
        Metric::NatvmToVmGbps,
    ];

    /// What a comparison of two cases looks at.
    pub const COMPARED: [Metric; 6] = [
        Metric::HostToVmGbps,
        Metric::VmToHostGbps,
        Metric::NatvmToVmGbps,
        Metric::RrPerS,
        Metric::CpuSPerGbHostToVm,
        Metric::CpuSPerGbVmToHost,
    ];

    pub fn better(self) -> Better {
        match self {
            Metric::HostToVmGbps
            | Metric::VmToHostGbps
            | Metric::NatvmToVmGbps
            | Metric::RrPerS => Better::Higher,
            Metric::CpuSPerGbHostToVm
            | Metric::CpuSPerGbVmToHost
            | Metric::UplinkBytesPerGb
            | Metric::RrP50Us
            | Metric::RrP99Us => Better::Lower,
        }
    }

    /// Short column label.
    pub fn label(self) -> &'static str {
        match self {
            Metric::HostToVmGbps => "host->VM Gbit/s",
            Metric::VmToHostGbps => "VM->host Gbit/s",
            Metric::NatvmToVmGbps => "NAT VM->VM Gbit/s",
            Metric::CpuSPerGbHostToVm => "CPU s/GB host->VM",
            Metric::CpuSPerGbVmToHost => "CPU s/GB VM->host",
            Metric::UplinkBytesPerGb => "uplink bytes/GB",
            Metric::RrPerS => "1-byte RR /s",
            Metric::RrP50Us => "RR p50 us",
            Metric::RrP99Us => "RR p99 us",
        }
    }

    /// Label in a ratio ("host->VM", "CPU/GB VM->host").
    pub fn short(self) -> &'static str {
        match self {
            Metric::HostToVmGbps => "host->VM",
            Metric::VmToHostGbps => "VM->host",
            Metric::NatvmToVmGbps => "NAT VM->VM",
            Metric::CpuSPerGbHostToVm => "CPU/GB host->VM",
            Metric::CpuSPerGbVmToHost => "CPU/GB VM->host",
            Metric::UplinkBytesPerGb => "uplink bytes",
            Metric::RrPerS => "RR",
            Metric::RrP50Us => "RR p50",
            Metric::RrP99Us => "RR p99",
        }
    }

    pub fn digits(self) -> usize {
        match self {
            Metric::HostToVmGbps | Metric::VmToHostGbps | Metric::NatvmToVmGbps => 2,
            Metric::CpuSPerGbHostToVm | Metric::CpuSPerGbVmToHost => 3,
            Metric::UplinkBytesPerGb | Metric::RrPerS => 0,
            Metric::RrP50Us | Metric::RrP99Us => 1,
        }
    }
}

/// Samples of one figure, one per trial, and their summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stat {
    /// The summary of `samples`; an error when there are none or one of
    /// them is not a number (a measurement that failed is not a figure).
    pub fn of(samples: Vec<f64>) -> Result<Stat> {
        if samples.is_empty() {
            bail!("no samples");
        }
        if let Some(bad) = samples.iter().find(|x| !x.is_finite()) {
            bail!("a sample is {bad}");
        }
        let mut s = samples.clone();
        s.sort_by(f64::total_cmp);
        Ok(Stat {
            median: median_sorted(&s),
            min: s[0],
            max: s[s.len() - 1],
            samples,
        })
    }

    /// Whether the summary agrees with its samples and is a number.
    pub fn is_consistent(&self) -> bool {
        let finite = [self.median, self.min, self.max]
            .iter()
            .chain(&self.samples)
            .all(|x| x.is_finite());
        finite && !self.samples.is_empty() && self.min <= self.median && self.median <= self.max
    }
}

/// The median of sorted values (the mean of the middle two for an even
/// count).
fn median_sorted(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Every figure of one case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub host_to_vm_gbps: Stat,
    pub vm_to_host_gbps: Stat,
    pub natvm_to_vm_gbps: Stat,
    pub cpu_s_per_gb_host_to_vm: Stat,
    pub cpu_s_per_gb_vm_to_host: Stat,
    pub uplink_bytes_per_gb: Stat,
    pub rr_per_s: Stat,
    pub rr_p50_us: Stat,
    pub rr_p99_us: Stat,
}

impl Figures {
    pub fn get(&self, m: Metric) -> &Stat {
        match m {
            Metric::HostToVmGbps => &self.host_to_vm_gbps,
            Metric::VmToHostGbps => &self.vm_to_host_gbps,
            Metric::NatvmToVmGbps => &self.natvm_to_vm_gbps,
            Metric::CpuSPerGbHostToVm => &self.cpu_s_per_gb_host_to_vm,
            Metric::CpuSPerGbVmToHost => &self.cpu_s_per_gb_vm_to_host,
            Metric::UplinkBytesPerGb => &self.uplink_bytes_per_gb,
            Metric::RrPerS => &self.rr_per_s,
            Metric::RrP50Us => &self.rr_p50_us,
            Metric::RrP99Us => &self.rr_p99_us,
        }
    }

    /// Builds the figures from samples by metric; every metric must have
    /// its samples.
    pub fn from_samples(mut get: impl FnMut(Metric) -> Result<Stat>) -> Result<Figures> {
        Ok(Figures {
            host_to_vm_gbps: get(Metric::HostToVmGbps)?,
            vm_to_host_gbps: get(Metric::VmToHostGbps)?,
            natvm_to_vm_gbps: get(Metric::NatvmToVmGbps)?,
            cpu_s_per_gb_host_to_vm: get(Metric::CpuSPerGbHostToVm)?,
            cpu_s_per_gb_vm_to_host: get(Metric::CpuSPerGbVmToHost)?,
            uplink_bytes_per_gb: get(Metric::UplinkBytesPerGb)?,
            rr_per_s: get(Metric::RrPerS)?,
            rr_p50_us: get(Metric::RrP50Us)?,
            rr_p99_us: get(Metric::RrP99Us)?,
        })
    }
}

/// How a program of mvbridge's ran on one direction of one case, summed
/// over the trials (the kernel's BPF run-time statistics, sampled around
/// each transfer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramRuns {
    pub program: String,
    /// "host->VM" or "VM->host".
    pub direction: String,
    /// Program runs per GB moved.
    pub runs_per_gb: f64,
    /// Bytes moved per run: ~64 KiB when GSO packets pass whole, ~1.5 KB
    /// when they were split into frames before the hook.
    pub bytes_per_run: f64,
    /// Program time per GB moved, and per run.
    pub ns_per_gb: f64,
    pub ns_per_run: f64,
}

/// One row of the data-path table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub case: Case,
    pub figures: Figures,
    /// The VM's internet throughput during a local bulk transfer over the
    /// same alone; present exactly when [`Case::measures_internet`].
    pub internet_during_bulk: Option<Stat>,
    /// mvbridge's programs on this case's transfers (empty where none ran).
    pub programs: Vec<ProgramRuns>,
}

/// A trial-by-trial ratio of one figure of two cases, oriented so that
/// above 1.0 is better for `case` (case/baseline for throughput and
/// request rate, baseline/case for CPU per GB).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub case: Case,
    pub baseline: Case,
    pub metric: Metric,
    pub stat: Stat,
}

/// The pairs compared trial by trial: mvbridge against each other setup
/// with the same kind of guest (the routed setups have /32 guests only),
/// and the shim and the bridge against the ceiling.
pub fn pairs() -> Vec<(Case, Case)> {
    let mut out = Vec::new();
    for g in Setup::Mvbridge.guests() {
        let c = Case::new(Setup::Mvbridge, *g);
        out.push((c, Case::new(Setup::ClassicShim, *g)));
        out.push((c, Case::new(Setup::Hairpin, g.routed())));
        out.push((c, Case::new(Setup::LinuxBridge, g.routed())));
        out.push((c, Case::new(Setup::Ceiling, g.routed())));
    }
    for g in Setup::ClassicShim.guests() {
        out.push((
            Case::new(Setup::ClassicShim, *g),
            Case::new(Setup::Ceiling, g.routed()),
        ));
    }
    for g in Setup::LinuxBridge.guests() {
        out.push((
            Case::new(Setup::LinuxBridge, *g),
            Case::new(Setup::Ceiling, *g),
        ));
    }
    out
}

/// Per-packet cost of the programs with `vms` VMs in the tables, from
/// BPF_PROG_TEST_RUN (the kernel's average over many runs, the least
/// disturbed of several), for one address family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerPacket {
    pub vms: u32,
    /// 4 or 6.
    pub family: u8,
    pub empty_ns: f64,
    pub uplink_ns: f64,
    pub vm_ns: f64,
}

impl PerPacket {
    pub fn uplink_over_empty(&self) -> f64 {
        self.uplink_ns - self.empty_ns
    }
    pub fn vm_over_empty(&self) -> f64 {
        self.vm_ns - self.empty_ns
    }
}

/// A program's average run time over the whole data-path part of the run,
/// from the kernel's BPF statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveProgram {
    pub program: String,
    pub ns_per_run: f64,
    pub runs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// The empty program, attached to the egress hook of the ceiling's veth.
    pub empty: LiveProgram,
    pub programs: Vec<LiveProgram>,
}

/// The daemon with the three VMs of the demo's lab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Control {
    pub vms: usize,
    pub start_to_attached_ms: Stat,
    pub macvtap_to_live_ms: Stat,
    pub rss_mib: Stat,
    /// A 10,000-VM config (no links present): parsing it, starting with
    /// it, and filling the tables for that many VMs.
    pub config_10k_parse_ms: f64,
    pub config_10k_start_to_attached_ms: f64,
    pub config_10k_fill_ms: f64,
    pub config_10k_rss_mib: f64,
}

/// One host<->VM ping check of the scale section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingCheck {
    pub vm: String,
    pub kind: GuestKind,
    pub v4: bool,
    pub v6: bool,
}

/// The daemon with `vms` VM links present on one uplink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalePoint {
    pub vms: usize,
    /// Macvtaps in the host's namespace.
    pub macvtaps: usize,
    /// Macvlans in namespaces of their own (`netns = ...`), one each.
    pub netns_vms: usize,
    /// Seconds it took to make the links (`ip -batch`).
    pub setup_s: f64,
    /// VMs the daemon said were live when it had attached.
    pub live_at_start: usize,
    pub start_to_attached_ms: f64,
    /// A periodic full pass: observing the world and planning (the
    /// daemon's debug log, per pass), and the daemon's CPU per pass (its
    /// threads' scheduler run time over the idle window, per pass).
    pub pass_observe_ms: Stat,
    pub pass_plan_ms: Stat,
    /// Applying the plan (links, tables, hooks: the daemon's "applied"
    /// debug line), and the whole pass (observe + plan + apply).
    pub pass_apply_ms: Stat,
    pub pass_ms: Stat,
    pub pass_cpu_ms: f64,
    /// `mvbridge check` (observe and plan, as the loop does, from a
    /// process of its own), wall time.
    pub check_ms: f64,
    /// A configured VM's macvtap appearing -> live (the daemon's
    /// `reaction_us`).
    pub macvtap_to_live_ms: Stat,
    /// A configured kernel guest's macvlan moved into its namespace ->
    /// live.
    pub netns_to_live_ms: Stat,
    /// The idle daemon's CPU (utime + stime from /proc/PID/stat, 10 ms
    /// ticks) over `idle_s`, in percent of one core.
    pub idle_s: f64,
    pub idle_cpu_percent: f64,
    pub passes_while_idle: usize,
    pub rss_mib: f64,
    pub pings: Vec<PingCheck>,
}

/// The limits of the goals, in one place.
pub mod limits {
    pub const HAIRPIN_RATIO: f64 = 20.0;
    pub const VERSUS_SHIM: f64 = 1.0;
    pub const VERSUS_CEILING: f64 = 0.95;
    pub const INTERNET_DURING_BULK: f64 = 0.9;
    /// Uplink bytes per GB that still count as none (a stray neighbour
    /// probe, not the transfer).
    pub const NO_UPLINK_BYTES: f64 = 1_000.0;
    pub const PER_PACKET_NS: f64 = 50.0;
    pub const FLAT_WITHIN: f64 = 0.10;
    pub const START_SMALL_MS: f64 = 50.0;
    pub const START_1000_MS: f64 = 1_000.0;
    pub const LINK_TO_LIVE_MS: f64 = 20.0;
    pub const IDLE_CPU_PERCENT: f64 = 1.0;
    pub const RSS_MIB: f64 = 32.0;
    pub const CONFIG_10K_MS: f64 = 1_000.0;
}

/// What a goal asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum Target {
    /// mvbridge's host <-> VM throughput over the hairpin's, both
    /// directions.
    OverHairpin { guest: Guest, min: f64 },
    /// mvbridge's host -> VM traffic leaves nothing on the uplink.
    NoUplinkBytes { guest: Guest },
    /// Where the shim still sends a /32 guest's replies out, mvbridge
    /// does not.
    UplinkSparedWhereShimSends { guest: Guest },
    /// The VM's internet throughput during a local bulk transfer over the
    /// same alone.
    InternetDuringBulk { guest: Guest, min: f64 },
    /// mvbridge over the classic shim on every compared figure.
    OverShim {
        guest: Guest,
        metrics: Vec<Metric>,
        min: f64,
    },
    /// mvbridge over the ceiling on every compared figure.
    OverCeiling {
        guest: Guest,
        metrics: Vec<Metric>,
        min: f64,
    },
    /// Per-packet cost of mvb_uplink and mvb_vm over the empty program.
    PerPacket { max_ns: f64 },
    /// Per-packet cost the same from 1 VM to `vms`.
    PerPacketFlat { vms: u32, within: f64 },
    /// Daemon start to datapath attached with `vms` VMs.
    StartToAttached { vms: usize, max_ms: f64 },
    /// A VM link appearing -> live with `vms` VM links present.
    LinkToLive { vms: usize, max_ms: f64 },
    /// The idle daemon's CPU with `vms` VM links.
    IdleCpu { vms: usize, max_percent: f64 },
    /// The daemon's resident memory with `vms` VM links.
    Rss { vms: usize, max_mib: f64 },
    /// Starting with a 10,000-VM config and filling the tables.
    Config10k { max_ms: f64 },
    /// Host <-> VM pings work for the sampled VMs at every N.
    PingsAtScale,
}

impl Target {
    /// The goal as the table shows it.
    pub fn describe(&self) -> String {
        match self {
            Target::OverHairpin { guest, min } => {
                format!("c vs a ({guest}): host <-> VM throughput >= {min}x")
            }
            Target::NoUplinkBytes { guest } => {
                format!("c ({guest}): 0 bytes on the uplink for host <-> VM")
            }
            Target::UplinkSparedWhereShimSends { guest } => {
                format!(
                    "c ({guest}): 0 uplink bytes where b still sends the /32 guest's traffic out"
                )
            }
            Target::InternetDuringBulk { guest, min } => format!(
                "c ({guest}): VM internet throughput during a local bulk transfer >= {min}x alone"
            ),
            Target::OverShim { guest, min, .. } => format!(
                "c vs b ({guest}): throughput (3 paths), RR and CPU/GB (2 directions) >= {min:.2}x"
            ),
            Target::OverCeiling { guest, min, .. } => format!(
                "c vs e ({guest}): throughput (3 paths), RR and CPU/GB (2 directions) >= {min:.2}x"
            ),
            Target::PerPacket { max_ns } => {
                format!("per-packet mvb_uplink and mvb_vm <= {max_ns} ns over the empty program")
            }
            Target::PerPacketFlat { vms, within } => format!(
                "per-packet cost flat (within {:.0} %) from 1 to {vms} VMs",
                within * 100.0
            ),
            Target::StartToAttached { vms, max_ms } => {
                format!("start to attached with {vms} VMs <= {max_ms} ms")
            }
            Target::LinkToLive { vms, max_ms } => {
                format!("VM link appears -> live, {vms} VM links present, <= {max_ms} ms")
            }
            Target::IdleCpu { vms, max_percent } => {
                format!("idle daemon with {vms} VM links < {max_percent} % of a core")
            }
            Target::Rss { vms, max_mib } => {
                format!("daemon RSS with {vms} VM links <= {max_mib} MiB")
            }
            Target::Config10k { max_ms } => {
                format!("10,000-VM config (start + filling the tables) <= {max_ms} ms")
            }
            Target::PingsAtScale => "host <-> VM ping works for the sampled VMs at every N".into(),
        }
    }
}

/// One labelled value of what a goal measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub what: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub target: Target,
    pub met: bool,
    pub measured: Vec<Measured>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: u64,
    pub kernel: String,
    /// /proc/loadavg at the start and the end of the run.
    pub load_start: String,
    pub load_end: String,
    /// User processes that were not the bench's and took CPU during the
    /// run (name, CPU seconds): what the CPU figures had taken out.
    pub others: Vec<(String, f64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub smoke: bool,
    pub trials: u32,
    pub took_s: f64,
    pub machine: Machine,
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub per_packet: Vec<PerPacket>,
    pub live: Live,
    pub control: Control,
    pub scale: Vec<ScalePoint>,
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn row(&self, case: Case) -> Option<&Row> {
        self.rows.iter().find(|r| r.case == case)
    }

    pub fn ratio(&self, case: Case, baseline: Case, metric: Metric) -> Option<&Ratio> {
        self.ratios
            .iter()
            .find(|r| r.case == case && r.baseline == baseline && r.metric == metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_refuses_what_was_not_measured() {
        assert!(Stat::of(vec![]).is_err());
        assert!(Stat::of(vec![1.0, f64::NAN]).is_err());
        let s = Stat::of(vec![3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 10.0));
        assert!(s.is_consistent());
    }

    #[test]
    fn every_pair_compares_declared_cases() {
        let all = Case::all();
        for (a, b) in pairs() {
            assert!(all.contains(&a) && all.contains(&b), "{a} vs {b}");
        }
    }
}
