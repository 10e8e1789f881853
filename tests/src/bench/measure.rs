//! The measurements: TCP transfers, request/response, CPU time, the
//! kernel's BPF run-time statistics, a daemon's CPU and memory.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// What one transfer moved.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// Bits per second received.
    pub bps: f64,
    /// Bytes received.
    pub bytes: f64,
}

/// A TCP transfer with iperf3 for whole `seconds` (iperf3 reads -t as an
/// integer; 0 would mean forever).
pub fn iperf(from: &Netns, to: IpAddr, seconds: u32, reverse: bool) -> Result<Transfer> {
    // A path that does not work must cost seconds, not the whole run.
    let limit = format!("{}", seconds + 8);
    let secs = seconds.to_string();
    let to_s = to.to_string();
    let mut argv = vec![
        "timeout",
        &limit,
        "iperf3",
        "--connect-timeout",
        "2000",
        "-c",
        &to_s,
        "-p",
        "5201",
        "-t",
        &secs,
        "-J",
    ];
    if reverse {
        argv.push("-R");
    }
    let out = from.output(&argv)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 to {to} printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 to {to}: {e}");
    }
    let sum = &v["end"]["sum_received"];
    let (Some(bps), Some(bytes)) = (sum["bits_per_second"].as_f64(), sum["bytes"].as_f64()) else {
        bail!("no throughput in iperf3's output");
    };
    if bps <= 0.0 || bytes <= 0.0 {
        bail!("iperf3 to {to} moved nothing");
    }
    Ok(Transfer { bps, bytes })
}

/// 1-byte TCP ping-pong for `span`: transactions per second and the
/// latencies' p50 and p99, in microseconds.
pub fn ping_pong(
    client: &Netns,
    server: &Netns,
    to: IpAddr,
    port: u16,
    span: Duration,
) -> Result<(f64, f64, f64)> {
    let listener = server.in_ns(move || TcpListener::bind(SocketAddr::from((to, port))))??;
    listener.set_nonblocking(true)?;
    let srv = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(3);
        let accepted = loop {
            match listener.accept() {
                Ok((s, _)) => break Some(s),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break None,
            }
        };
        if let Some(mut s) = accepted {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.set_nodelay(true);
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).is_ok() {
                if s.write_all(&b).is_err() {
                    break;
                }
            }
        }
    });
    let lat = client.in_ns(move || -> std::io::Result<Vec<u32>> {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [7u8; 1];
        let mut lat = Vec::with_capacity(200_000);
        let t0 = Instant::now();
        while t0.elapsed() < span {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            lat.push(t.elapsed().as_nanos() as u32);
        }
        Ok(lat)
    })?;
    let _ = srv.join();
    let mut lat = lat.with_context(|| format!("request/response with {to}"))?;
    if lat.is_empty() {
        bail!("no request/response with {to} completed");
    }
    lat.sort_unstable();
    let pick =
        |q: f64| f64::from(lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)]) / 1000.0;
    Ok((lat.len() as f64 / span.as_secs_f64(), pick(0.5), pick(0.99)))
}

/// Clock ticks per second of /proc's CPU times (USER_HZ).
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A process as /proc/PID/stat shows it.
#[derive(Clone, Debug)]
pub struct ProcStat {
    pub comm: String,
    pub ppid: u32,
    pub kernel_thread: bool,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    pub start: u64,
}

/// /proc/PID/stat of one process (all its threads), if it exists.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may hold spaces: fields follow the last ')'.
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // After comm: state(0) ppid(1) ... flags(6) ... utime(11) stime(12)
    // ... starttime(19).
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
    const PF_KTHREAD: u64 = 0x0020_0000;
    Some(ProcStat {
        comm,
        ppid: num(1)? as u32,
        kernel_thread: num(6)? & PF_KTHREAD != 0,
        ticks: num(11)? + num(12)?,
        start: num(19)?,
    })
}

/// CPU seconds (utime + stime, all threads) a process has used.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    proc_stat(pid).map(|p| p.ticks as f64 / ticks_per_s())
}

/// Time a process's threads have spent on a CPU (the scheduler's own
/// accounting, in ns: finer than utime + stime, which count 10 ms ticks).
pub fn process_runtime_s(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let s = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
        ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

fn all_processes() -> HashMap<u32, ProcStat> {
    let mut out = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some(st) = proc_stat(pid)
            {
                out.insert(pid, st);
            }
        }
    }
    out
}

/// The machine's busy time so far (user, nice, system, irq, softirq; not
/// idle, iowait, steal, or guest time, which user time already holds),
/// in clock ticks.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    [0usize, 1, 2, 5, 6]
        .iter()
        .map(|i| v.get(*i).copied().unwrap_or(0))
        .sum()
}

/// A point in time for [`CpuMark::ours_since`].
pub struct CpuMark {
    busy: u64,
    procs: HashMap<u32, ProcStat>,
}

/// Whether `pid` is this process or descends from it.
fn is_ours(pid: u32, procs: &HashMap<u32, ProcStat>) -> bool {
    let me = std::process::id();
    let mut p = pid;
    for _ in 0..64 {
        if p == me {
            return true;
        }
        match procs.get(&p) {
            Some(s) if s.ppid > 1 => p = s.ppid,
            _ => return false,
        }
    }
    false
}

impl CpuMark {
    pub fn now() -> CpuMark {
        CpuMark {
            busy: machine_busy_ticks(),
            procs: all_processes(),
        }
    }

    /// CPU seconds the machine spent since the mark, without what other
    /// users' processes spent (the machine is shared: engineers' VMs under
    /// TCG take a core). Kernel threads (softirq work, RCU) count as ours;
    /// a foreign process that came and went between the marks cannot be
    /// seen and counts as ours too. Also returns the foreign seconds by
    /// process name.
    pub fn ours_since(&self) -> (f64, BTreeMap<String, f64>) {
        let busy = machine_busy_ticks().saturating_sub(self.busy);
        let now = all_processes();
        let mut foreign = 0u64;
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (pid, st) in &now {
            if st.kernel_thread || is_ours(*pid, &now) {
                continue;
            }
            let before = match self.procs.get(pid) {
                Some(b) if b.start == st.start => b.ticks,
                _ => 0,
            };
            let d = st.ticks.saturating_sub(before);
            if d > 0 {
                foreign += d;
                *by_name.entry(st.comm.clone()).or_default() += d as f64 / ticks_per_s();
            }
        }
        (busy.saturating_sub(foreign) as f64 / ticks_per_s(), by_name)
    }
}

/// The kernel's BPF run-time statistics of every loaded program, by id:
/// name, total run time (ns) and run count. Needs `enable_stats`.
pub fn bpf_stats() -> HashMap<u32, (String, u64, u64)> {
    aya::programs::loaded_programs()
        .flatten()
        .map(|p| {
            (
                p.id(),
                (
                    p.name_as_str().unwrap_or("").to_owned(),
                    p.run_time().as_nanos() as u64,
                    p.run_count(),
                ),
            )
        })
        .collect()
}

/// What each program (by name) ran between two snapshots: run time (ns)
/// and runs. Programs that did not run are left out.
pub fn bpf_delta(
    before: &HashMap<u32, (String, u64, u64)>,
    after: &HashMap<u32, (String, u64, u64)>,
) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, (name, ns, runs)) in after {
        let (ns0, runs0) = before.get(id).map(|b| (b.1, b.2)).unwrap_or((0, 0));
        let dr = runs.saturating_sub(runs0);
        if dr > 0 {
            let e = out.entry(name.clone()).or_default();
            e.0 += ns.saturating_sub(ns0);
            e.1 += dr;
        }
    }
    out
}

/// Resident memory of a process, in MiB; an error if it is gone.
pub fn rss_mib(pid: u32) -> Result<f64> {
    let kib = crate::daemon::rss_kib(pid);
    if kib == 0 {
        bail!("process {pid} has no resident memory (gone?)");
    }
    Ok(kib as f64 / 1024.0)
}

/// The least of several values (the least disturbed of repeated timings:
/// interrupts and the other core only ever add time).
pub fn least(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// A `key=value` field of a log line, which must be there.
pub fn field(line: &str, key: &str) -> Result<u64> {
    crate::daemon::log_field(line, key).with_context(|| format!("no {key}= in log line {line:?}"))
}
