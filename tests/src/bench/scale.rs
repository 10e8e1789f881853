//! The scale section: the daemon with N VM links present on one uplink,
//! half of them macvtaps in the host's namespace (VMs), half macvlans in
//! namespaces of their own (`netns = ...`: kernel guests and containers,
//! reached through the shim), each a configured VM with an address.
//!
//! At each N: start to attached, a periodic full pass, `mvbridge check`, a
//! VM link appearing -> live (a macvtap, and a macvlan moved into its
//! namespace), the idle daemon's CPU and memory, and host <-> VM pings
//! to a sample of VMs that run a real stack (two emulated VMs, two kernel
//! guests).
//!
//! Addresses: the sampled VMs have IPv4 in 203.0.113.128/26 and IPv6;
//! the others IPv6 only, in the uplink's on-link 2001:db8:0:1::/64 (there
//! are not enough IPv4 documentation addresses for 1,000 VMs).
//!
//! Everything made here is removed again, also on failure: the links go
//! with the lab's namespaces, the per-VM namespaces with [`Namespaces`]
//! (named after the lab, so a later lab sweeps them if this process dies).

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::measure::{self, field};
use super::report::{GuestKind, PingCheck, ScalePoint, Stat};
use crate::lab::{Lab, UPLINK, VmSpec};
use crate::netns::Netns;

/// The N the full run measures.
pub const FULL: [usize; 3] = [10, 100, 1_000];
/// The N the smoke run measures.
pub const SMOKE: [usize; 1] = [10];

/// Sampled VMs per kind (they count towards N).
const SAMPLES: usize = 2;

/// Namespaces made in bulk (`ip -batch`), deleted in bulk on drop.
struct Namespaces {
    names: Vec<String>,
    dir: std::path::PathBuf,
}

impl Namespaces {
    fn create(names: Vec<String>, dir: &Path) -> Result<Namespaces> {
        let ns = Namespaces {
            names,
            dir: dir.to_owned(),
        };
        let batch: String = ns
            .names
            .iter()
            .map(|n| format!("netns add {n}\n"))
            .collect();
        run_batch(None, &dir.join("netns-add.batch"), &batch)?;
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let batch: String = self
            .names
            .iter()
            .map(|n| format!("netns del {n}\n"))
            .collect();
        // -force: go on past a namespace that is already gone.
        let path = self.dir.join("netns-del.batch");
        if std::fs::write(&path, batch).is_ok() {
            let _ = crate::sh::output(&["ip", "-force", "-batch", &path.display().to_string()]);
        }
        for n in &self.names {
            if Path::new(&format!("/run/netns/{n}")).exists() {
                let _ = crate::sh::output(&["ip", "netns", "del", n]);
            }
        }
    }
}

/// `ip [-n ns] -batch file` with `text` as the file.
fn run_batch(ns: Option<&str>, path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    let p = path.display().to_string();
    let mut args = vec!["ip"];
    if let Some(n) = ns {
        args.extend(["-n", n]);
    }
    args.extend(["-batch", p.as_str()]);
    crate::sh::run(&args)?;
    Ok(())
}

/// `mvbridge run` with the debug log, for the scale section: no time
/// limit fit for three VMs, and a log kept line by line.
struct ScaleDaemon {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl ScaleDaemon {
    fn start(host: &Netns, config: &Path, patience: Duration) -> Result<(ScaleDaemon, String)> {
        let bin = crate::bins::path("mvbridge")?;
        let mut cmd = host.command(bin.to_str().context("utf-8 path")?)?;
        // SAFETY: prctl is async-signal-safe. A bench killed outright
        // takes its daemon with it (SIGTERM: it removes its datapath).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .args(["run", "--config", &config.display().to_string()])
            .env("NO_COLOR", "1")
            .env("MVBRIDGE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mvbridge")?;
        let stderr = child.stderr.take().context("mvbridge stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut d = ScaleDaemon {
            child: Some(child),
            log,
        };
        let line = d.wait(&["datapath attached"], 0, patience)?;
        Ok((d, line))
    }

    fn pid(&self) -> Result<u32> {
        self.child.as_ref().map(Child::id).context("daemon stopped")
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many log lines hold all of `needles`.
    fn count(&self, needles: &[&str]) -> usize {
        self.lines()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits for the (`seen` + 1)th line holding all of `needles`.
    fn wait(&mut self, needles: &[&str], seen: usize, patience: Duration) -> Result<String> {
        let deadline = Instant::now() + patience;
        loop {
            let lines = self.lines();
            if let Some(l) = lines
                .iter()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .nth(seen)
            {
                return Ok(l.clone());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("mvbridge exited ({status}):\n{}", tail(&self.lines(), 30));
            }
            if Instant::now() > deadline {
                bail!(
                    "no log line with {needles:?} within {patience:?}:\n{}",
                    tail(&lines, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for ScaleDaemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        // Taking down a hook per VM takes a while with 1,000 of them.
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A sampled VM: its spec for the lab (its key must be 'static).
fn sample(key: &'static str, i: u8, kind: GuestKind) -> VmSpec {
    VmSpec {
        key,
        interface: match kind {
            GuestKind::Vm => format!("svm{i}"),
            GuestKind::Kernel => "eth0".into(),
        },
        mac: Box::leak(format!("52:54:00:05:{:02x}:{i:02x}", kind as u8).into_boxed_str()),
        addr: std::net::Ipv4Addr::new(203, 0, 113, 130 + i),
        prefix: 26,
        addr6: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x130 + u16::from(i)),
        prefix6: 64,
        created_by_mvbridge: false,
        kernel: kind == GuestKind::Kernel,
    }
}

/// Measures the scale section at each N; the daemon's debug log of each
/// goes to `log_dir`/scale-N.log.
pub fn run(
    counts: &[usize],
    smoke: bool,
    log_dir: &Path,
    stop: &dyn Fn() -> Result<()>,
) -> Result<Vec<ScalePoint>> {
    std::fs::create_dir_all(log_dir)?;
    let mut out = Vec::new();
    for &n in counts {
        stop()?;
        eprintln!("bench: scale, {n} VM links");
        out.push(
            point(n, smoke, &log_dir.join(format!("scale-{n}.log")))
                .with_context(|| format!("the scale section at N = {n}"))?,
        );
    }
    Ok(out)
}

fn point(n: usize, smoke: bool, log: &Path) -> Result<ScalePoint> {
    anyhow::ensure!(
        n >= 4 * SAMPLES && n.is_multiple_of(2),
        "N = {n}: too small or odd"
    );
    let mut lab = Lab::build(Vec::new())?;
    let t_setup = Instant::now();
    let id = lab.id.clone();
    let host = lab.host.name.clone();

    // The sampled VMs: emulated VMs on macvtaps, kernel guests in
    // namespaces of their own, with a stack that answers pings.
    const VM_KEYS: [&str; SAMPLES] = ["m0", "m1"];
    const KERNEL_KEYS: [&str; SAMPLES] = ["n0", "n1"];
    for (i, key) in VM_KEYS.iter().enumerate() {
        let s = sample(key, i as u8, GuestKind::Vm);
        lab.host.ipw(&format!(
            "link add link {UPLINK} name {} address {} type macvtap mode bridge",
            s.interface, s.mac
        ))?;
        lab.host.ipw(&format!("link set {} up", s.interface))?;
        let ns = Netns::new(&format!("{id}-vm-{key}"))?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        lab.specs.push(s);
        lab.guest_ns.push(ns);
        lab.start_guest(key)?;
    }
    for (i, key) in KERNEL_KEYS.iter().enumerate() {
        lab.add_kernel_guest(sample(key, (SAMPLES + i) as u8, GuestKind::Kernel))?;
    }

    // The others, made in bulk.
    let macvtaps = n / 2 - SAMPLES;
    let netns_vms = n / 2 - SAMPLES;
    let mut ns_names: Vec<String> = (0..netns_vms).map(|i| format!("{id}-c{i}")).collect();
    ns_names.push(format!("{id}-probe"));
    let namespaces = Namespaces::create(ns_names, &lab.dir)?;
    let mut batch = String::new();
    let mut config = format!(
        "{}{}",
        if smoke { "resync_seconds = 1\n" } else { "" },
        lab.config()
    );
    for i in 0..macvtaps {
        let name = format!("sv{i}");
        batch.push_str(&format!(
            "link add link {UPLINK} name {name} address 52:54:02:00:{:02x}:{:02x} type macvtap mode bridge\nlink set {name} up\n",
            i >> 8,
            i & 0xff
        ));
        config.push_str(&format!(
            "\n[[vm]]\nname = \"vm{i}\"\ninterface = \"{name}\"\naddresses = [\"2001:db8:0:1::1:{i:x}\"]\n"
        ));
    }
    for i in 0..netns_vms {
        let name = format!("kc{i}");
        batch.push_str(&format!(
            "link add link {UPLINK} name {name} address 52:54:03:00:{:02x}:{:02x} type macvlan mode bridge\nlink set {name} netns {id}-c{i}\n",
            i >> 8,
            i & 0xff
        ));
        config.push_str(&format!(
            "\n[[vm]]\nname = \"ct{i}\"\ninterface = \"{name}\"\nnetns = \"{id}-c{i}\"\naddresses = [\"2001:db8:0:1::2:{i:x}\"]\n"
        ));
    }
    run_batch(Some(&host), &lab.dir.join("links.batch"), &batch)?;
    // The VMs whose links appear later, one of each kind.
    config.push_str(&format!(
        "\n[[vm]]\nname = \"probe-m\"\nmac = \"{PROBE_MAC_M}\"\naddresses = [\"2001:db8:0:1::5:1\"]\n\n[[vm]]\nname = \"probe-n\"\ninterface = \"kprobe\"\nnetns = \"{id}-probe\"\naddresses = [\"2001:db8:0:1::5:2\"]\n"
    ));
    let path = lab.write_config("mvbridge-scale.toml", &config)?;
    let setup_s = t_setup.elapsed().as_secs_f64();

    let (mut d, attached) = ScaleDaemon::start(&lab.host, &path, Duration::from_secs(300))?;
    let start_to_attached_ms = field(&attached, "elapsed_us")? as f64 / 1000.0;
    let live_at_start = field(&attached, "vms")? as usize;
    anyhow::ensure!(
        live_at_start == n,
        "{live_at_start} of {n} VMs live at start:\n{}",
        tail(&d.lines(), 30)
    );

    // Host <-> VM for the sampled VMs.
    let mut pings = Vec::new();
    for s in &lab.specs {
        pings.push(PingCheck {
            vm: s.key.to_owned(),
            kind: if s.kernel {
                GuestKind::Kernel
            } else {
                GuestKind::Vm
            },
            v4: crate::traffic::ping_retry(&lab.host, IpAddr::V4(s.addr), 3),
            v6: crate::traffic::ping_retry(&lab.host, IpAddr::V6(s.addr6), 3),
        });
    }

    // A VM link appearing -> live, and going again.
    let rounds = if smoke { 2 } else { 5 };
    let patience = Duration::from_secs(30);
    let mut macvtap_ms = Vec::new();
    let mut netns_ms = Vec::new();
    for _ in 0..rounds {
        let seen = d.count(&["vm ready", "vm=probe-m"]);
        let gone = d.count(&["vm gone", "vm=probe-m"]);
        lab.host.ipw(&format!(
            "link add link {UPLINK} name svprobe address {PROBE_MAC_M} type macvtap mode bridge"
        ))?;
        lab.host.ipw("link set svprobe up")?;
        let line = d.wait(&["vm ready", "vm=probe-m"], seen, patience)?;
        macvtap_ms.push(field(&line, "reaction_us")? as f64 / 1000.0);
        lab.host.ipw("link del svprobe")?;
        d.wait(&["vm gone", "vm=probe-m"], gone, patience)?;

        // A container's macvlan: made on the uplink, moved into its
        // namespace (what Docker's macvlan driver does).
        let seen = d.count(&["vm ready", "vm=probe-n"]);
        let gone = d.count(&["vm gone", "vm=probe-n"]);
        lab.host.ipw(&format!(
            "link add link {UPLINK} name kprobe address {PROBE_MAC_N} type macvlan mode bridge"
        ))?;
        lab.host.ipw(&format!("link set kprobe netns {id}-probe"))?;
        let line = d.wait(&["vm ready", "vm=probe-n"], seen, patience)?;
        netns_ms.push(field(&line, "reaction_us")? as f64 / 1000.0);
        // Back into the host's namespace (an event there), then away.
        crate::sh::run(&[
            "ip",
            "-n",
            &format!("{id}-probe"),
            "link",
            "set",
            "kprobe",
            "netns",
            &host,
        ])?;
        d.wait(&["vm gone", "vm=probe-n"], gone, patience)?;
        lab.host.ipw("link del kprobe")?;
    }

    // The idle daemon: CPU over the window, and its periodic passes.
    std::thread::sleep(Duration::from_secs(1));
    let idle = if smoke {
        Duration::from_secs(4)
    } else {
        Duration::from_secs(60)
    };
    let pid = d.pid()?;
    let planned0 = d.count(&["planned", "observe_us"]);
    let applied0 = d.count(&["applied", "hooks_us"]);
    let cpu0 = measure::process_cpu_s(pid).context("daemon gone")?;
    let run0 = measure::process_runtime_s(pid).context("daemon gone")?;
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let cpu1 = measure::process_cpu_s(pid).context("daemon gone")?;
    let run1 = measure::process_runtime_s(pid).context("daemon gone")?;
    let idle_s = t0.elapsed().as_secs_f64();
    let lines = d.lines();
    let planned: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("planned") && l.contains("observe_us"))
        .skip(planned0)
        .collect();
    anyhow::ensure!(
        !planned.is_empty(),
        "no reconcile pass in {idle_s:.0} s of idle (resync_seconds?)"
    );
    let observe: Vec<f64> = planned
        .iter()
        .map(|l| field(l, "observe_us").map(|x| x as f64 / 1000.0))
        .collect::<Result<_>>()?;
    let plan: Vec<f64> = planned
        .iter()
        .map(|l| field(l, "plan_us").map(|x| x as f64 / 1000.0))
        .collect::<Result<_>>()?;
    let applied: Vec<f64> = lines
        .iter()
        .filter(|l| l.contains("applied") && l.contains("hooks_us"))
        .skip(applied0)
        .map(|l| {
            Ok(
                (field(l, "links_us")? + field(l, "tables_us")? + field(l, "hooks_us")?) as f64
                    / 1000.0,
            )
        })
        .collect::<Result<_>>()?;
    anyhow::ensure!(
        !applied.is_empty(),
        "no \"applied\" debug line in {idle_s:.0} s of idle"
    );
    // Each idle pass is one round: its planned and applied lines pair up
    // (the window may cut the last one).
    let whole: Vec<f64> = observe
        .iter()
        .zip(&plan)
        .zip(&applied)
        .map(|((o, p), a)| o + p + a)
        .collect();
    let rss_mib = measure::rss_mib(pid)?;

    // `mvbridge check`: the same observe and plan from a process of its
    // own.
    let t = Instant::now();
    let out = crate::daemon::mvbridge(
        &lab.host,
        &["check", "--config", &path.display().to_string()],
    )?;
    let check_ms = t.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        eprintln!(
            "bench: mvbridge check at N = {n} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    let passes = planned.len();
    let point = ScalePoint {
        vms: n,
        macvtaps: macvtaps + SAMPLES,
        netns_vms: netns_vms + SAMPLES,
        setup_s,
        live_at_start,
        start_to_attached_ms,
        pass_observe_ms: Stat::of(observe)?,
        pass_plan_ms: Stat::of(plan)?,
        pass_apply_ms: Stat::of(applied)?,
        pass_ms: Stat::of(whole)?,
        pass_cpu_ms: (run1 - run0) * 1000.0 / passes as f64,
        check_ms,
        macvtap_to_live_ms: Stat::of(macvtap_ms)?,
        netns_to_live_ms: Stat::of(netns_ms)?,
        idle_s,
        idle_cpu_percent: (cpu1 - cpu0) / idle_s * 100.0,
        passes_while_idle: passes,
        rss_mib,
        pings,
    };
    std::fs::write(log, d.lines().join("\n") + "\n")
        .with_context(|| format!("writing {}", log.display()))?;
    let t_down = Instant::now();
    drop(d);
    eprintln!(
        "bench: scale N = {n}: links made in {setup_s:.1} s, daemon stopped in {:.1} s",
        t_down.elapsed().as_secs_f64()
    );
    drop(namespaces);
    drop(lab);
    Ok(point)
}

const PROBE_MAC_M: &str = "52:54:00:06:00:01";
const PROBE_MAC_N: &str = "52:54:00:06:00:02";
