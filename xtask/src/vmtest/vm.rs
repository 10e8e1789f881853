//! One VM run: boots a kernel on the root image with the payload disk,
//! streams the tests' output (ttyS1) to the terminal, watches the kernel
//! console (ttyS0, kept in a file) for panics and lockups, and turns the
//! init's marker line into the outcome. The tests are run by init.sh as
//! PID 1 (`vmtest`), or by a unit of systemd as PID 1 (`vmtest-package`);
//! either writes the same marker.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::accel::Accel;
use super::image::ROOT_PARTUUID;
use super::kernel::Disk;
use super::qemu::{Qemu, option_path};
use super::rootfs::INIT_PATH;

pub struct Vm<'a> {
    pub qemu: &'a Qemu,
    pub accel: Accel,
    pub vmlinuz: &'a Path,
    pub root: &'a Path,
    pub payload: &'a Path,
    /// Where the console and the tests' output are kept.
    pub logs: &'a Path,
    pub timeout: Duration,
    pub init: Init,
    pub disk: Disk,
    /// More of the kernel's command line, for the init to read in
    /// /proc/cmdline.
    pub cmdline: &'a str,
}

/// What the kernel starts as PID 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// init.sh, which runs the tests itself.
    Script,
    /// The image's own /sbin/init (systemd), which starts the tests as a
    /// unit of the image.
    Systemd,
}

impl Init {
    /// The kernel's command line for a root disk booted with this init,
    /// ending in `extra`.
    fn command_line(self, extra: &str) -> String {
        let init = match self {
            Init::Script => format!(" init={INIT_PATH}"),
            Init::Systemd => String::new(),
        };
        format!(
            "console=ttyS0 root=PARTUUID={ROOT_PARTUUID} rootwait rw rootfstype=ext4{init} \
             panic=-1 loglevel=4 mitigations=off {extra}"
        )
        .trim_end()
        .to_owned()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// These test binaries failed.
    Failed(Vec<String>),
    /// The init could not run the tests.
    Broken(String),
    /// No marker: the kernel died or qemu stopped.
    Crashed(String),
    TimedOut(Duration),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Outcome::Passed => write!(f, "passed"),
            Outcome::Failed(names) => write!(f, "FAILED: {}", names.join(", ")),
            Outcome::Broken(why) => write!(f, "FAILED to run the tests: {why}"),
            Outcome::Crashed(why) => write!(f, "CRASHED: {why}"),
            Outcome::TimedOut(after) => {
                write!(f, "TIMED OUT after {} min", after.as_secs() / 60)
            }
        }
    }
}

/// How long the kernel may take to start the init, which then says so
/// at once: a few seconds under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the VM may take to power off once the marker is out.
const POWER_OFF_GRACE: Duration = Duration::from_secs(30);

const MARKER: &str = "VMTEST_EXIT=";

/// The kernel has given up, or will not get anywhere: no point waiting
/// for the host's timeout.
const FATAL: &[&str] = &[
    "Kernel panic - not syncing",
    "BUG: soft lockup",
    "Watchdog detected hard LOCKUP",
    "detected stalls on CPUs",
];

enum Event {
    /// The init's first words.
    Up,
    Marker(Outcome),
    Kernel(String),
    Closed,
}

impl Vm<'_> {
    pub fn run(&self) -> Result<Outcome> {
        std::fs::create_dir_all(self.logs)?;
        let console = self.logs.join("console.log");
        // qemu truncates an old log in place, under the watcher's read
        // position: it must start from a new file.
        super::cache::remove(&console)?;
        let mut child = self.spawn(&console)?;
        let (tx, rx) = mpsc::channel();
        let stream = {
            let tx = tx.clone();
            let out = child.stdout.take().context("qemu's stdout")?;
            let log = File::create(self.logs.join("output.log"))?;
            std::thread::spawn(move || stream(out, log, tx))
        };
        let errors = {
            let err = child.stderr.take().context("qemu's stderr")?;
            std::thread::spawn(move || forward_errors(err))
        };
        let stop = Arc::new(AtomicBool::new(false));
        let watch = {
            let stop = stop.clone();
            let console = console.clone();
            std::thread::spawn(move || watch(&console, &stop, tx))
        };

        let started = Instant::now();
        let mut up = false;
        let mut deadline = started + self.timeout.min(BOOT_TIMEOUT);
        let mut marker = None;
        let mut timed_out = false;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Event::Up) => {
                    up = true;
                    deadline = started + self.timeout;
                }
                Ok(Event::Marker(outcome)) => {
                    marker = Some(outcome);
                    deadline = deadline.min(Instant::now() + POWER_OFF_GRACE);
                }
                Ok(Event::Kernel(_)) if marker.is_some() => {}
                Ok(Event::Kernel(line)) => {
                    eprintln!("xtask: vmtest: the kernel says {line:?}: stopping the VM");
                    break;
                }
                Ok(Event::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = marker.is_none();
                    break;
                }
            }
        }
        // Our own qemu, by its handle: a no-op once it exited.
        let _ = child.kill();
        let status = child.wait()?;
        stop.store(true, Ordering::Relaxed);
        let problem = watch.join().unwrap_or_default();
        let _ = stream.join();
        let _ = errors.join();
        Ok(match (marker, problem) {
            (Some(outcome), _) => outcome,
            (None, Some(line)) => Outcome::Crashed(format!("kernel: {line}")),
            (None, None) if timed_out && !up => Outcome::Crashed(format!(
                "no word from the VM's init within {} s",
                self.timeout.min(BOOT_TIMEOUT).as_secs()
            )),
            (None, None) if timed_out => Outcome::TimedOut(self.timeout),
            (None, None) => {
                Outcome::Crashed(format!("qemu exited ({status}) before the tests finished"))
            }
        })
    }

    fn spawn(&self, console: &Path) -> Result<Child> {
        let mut cmd = self.qemu.command();
        cmd.args(self.accel.args())
            // Two vCPUs: a test, and the daemon or guests it drives. No
            // network device: the tests build their own networks.
            .args(["-smp", "2", "-m", "2048", "-nodefaults", "-no-reboot"])
            .args(["-display", "none"])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-append")
            .arg(self.init.command_line(self.cmdline))
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=root,format=raw,snapshot=on",
                option_path(self.root)
            ))
            .args(self.disk.device("root", 0))
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=payload,format=raw,{}",
                option_path(self.payload),
                self.disk.read_only()
            ))
            .args(self.disk.device("payload", 1))
            .arg("-chardev")
            .arg(format!("file,id=console,path={}", option_path(console)))
            .args(["-serial", "chardev:console", "-serial", "stdio"])
            // qemu reads the serial port's input from stdin: give it a
            // pipe that stays quiet rather than the terminal.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        eprintln!("xtask: {}", crate::display(&cmd));
        cmd.spawn().context("cannot start qemu")
    }
}

impl Disk {
    /// The `-device` option for drive `id`, the `index`th disk. Both
    /// disks are found by PARTUUID and label, never by device name.
    fn device(self, id: &str, index: u8) -> [String; 2] {
        let device = match self {
            Disk::Nvme => format!("nvme,drive={id},serial={id}"),
            // One disk per IDE bus: the PIIX has two.
            Disk::Ide => format!("ide-hd,drive={id},bus=ide.{index},unit=0"),
        };
        ["-device".to_owned(), device]
    }

    /// The drive option that keeps the payload as it is. qemu's IDE disks
    /// refuse a read-only drive: writes go to a throw-away overlay instead.
    fn read_only(self) -> &'static str {
        match self {
            Disk::Nvme => "readonly=on",
            Disk::Ide => "snapshot=on",
        }
    }
}

/// Copies qemu's stdout (the tests' ttyS1) to ours and to `log` as it
/// comes, and reports the marker line.
fn stream(mut from: impl Read, mut log: File, tx: mpsc::Sender<Event>) {
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    let mut up = false;
    let stdout = std::io::stdout();
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if !up {
            up = true;
            let _ = tx.send(Event::Up);
        }
        {
            let mut out = stdout.lock();
            let _ = out.write_all(chunk);
            let _ = out.flush();
        }
        let _ = log.write_all(chunk);
        for &byte in chunk {
            if byte != b'\n' {
                line.push(byte);
                continue;
            }
            if let Some(outcome) = parse_marker(&String::from_utf8_lossy(&line)) {
                let _ = tx.send(Event::Marker(outcome));
            }
            line.clear();
        }
    }
    if !line.is_empty() {
        // Cut off mid-line (a timeout): what we say next starts afresh.
        println!();
    }
    let _ = tx.send(Event::Closed);
}

/// Shows what qemu itself has to say (bad options, missing files).
fn forward_errors(from: impl Read) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
        eprintln!("qemu: {line}");
    }
}

/// Follows the console file until `stop`, reporting the first fatal line
/// at once (to stop the VM) and returning it (it may only show up after
/// qemu is gone: with `panic=-1` the VM is gone at once).
fn watch(console: &Path, stop: &AtomicBool, tx: mpsc::Sender<Event>) -> Option<String> {
    let mut file = None;
    let mut pending = Vec::new();
    let mut found = None;
    loop {
        // Read once more after `stop`: the last lines may be the news.
        let last = stop.load(Ordering::Relaxed);
        if file.is_none() {
            file = File::open(console).ok();
        }
        if let Some(f) = &mut file {
            let _ = f.read_to_end(&mut pending);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if found.is_none()
                    && let Some(fatal) = fatal(&line)
                {
                    found = Some(fatal.to_owned());
                    let _ = tx.send(Event::Kernel(fatal.to_owned()));
                }
            }
        }
        if last {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The console line, trimmed, if it says the kernel is done for.
fn fatal(line: &str) -> Option<&str> {
    FATAL.iter().any(|f| line.contains(f)).then(|| line.trim())
}

/// The init's last line: `VMTEST_EXIT=<code>[ <detail>]`.
fn parse_marker(line: &str) -> Option<Outcome> {
    let rest = line.trim_end().strip_prefix(MARKER)?;
    let (code, detail) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(match code {
        "0" => Outcome::Passed,
        "1" => Outcome::Failed(detail.split_whitespace().map(str::to_owned).collect()),
        _ => Outcome::Broken(format!("{detail} (code {code})")),
    })
}

/// The last `n` lines of the console, to show with a crash.
pub fn console_tail(logs: &Path, n: usize) -> (PathBuf, String) {
    let path = logs.join("console.log");
    let text = std::fs::read(&path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    (path, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(parse_marker("VMTEST_EXIT=0"), Some(Outcome::Passed));
        assert_eq!(parse_marker("VMTEST_EXIT=0\r"), Some(Outcome::Passed));
        assert_eq!(
            parse_marker("VMTEST_EXIT=1 ipv4 lifecycle"),
            Some(Outcome::Failed(vec!["ipv4".into(), "lifecycle".into()]))
        );
        assert_eq!(
            parse_marker("VMTEST_EXIT=2 cannot mount the payload disk /dev/nvme1n1"),
            Some(Outcome::Broken(
                "cannot mount the payload disk /dev/nvme1n1 (code 2)".into()
            ))
        );
        assert_eq!(parse_marker("test x ... ok"), None);
        assert_eq!(parse_marker("  VMTEST_EXIT=0"), None);
    }

    #[test]
    fn fatal_console_lines() {
        assert_eq!(
            fatal("[   12.3] Kernel panic - not syncing: Attempted to kill init!\n"),
            Some("[   12.3] Kernel panic - not syncing: Attempted to kill init!")
        );
        assert!(fatal("[ 30.1] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [x:1]").is_some());
        assert!(fatal("[ 40.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:").is_some());
        assert_eq!(fatal("[ 1.0] loop: module loaded"), None);
    }

    #[test]
    fn systemd_boots_the_image_init_and_the_script_its_own() {
        let script = Init::Script.command_line("");
        assert!(script.contains(" init=/sbin/vmtest-init "), "{script}");
        assert!(!script.ends_with(' '), "{script:?}");
        let systemd = Init::Systemd.command_line("");
        assert!(!systemd.contains("init="), "{systemd}");
        assert!(systemd.starts_with("console=ttyS0 root=PARTUUID=6d766272-01 "));
        assert_eq!(
            script.replace(" init=/sbin/vmtest-init", ""),
            systemd,
            "the two differ in the init only"
        );
        let more = Init::Script.command_line("mvb.too_old");
        assert_eq!(more, format!("{script} mvb.too_old"));
    }

    #[test]
    fn outcomes_read_well() {
        assert_eq!(
            Outcome::Failed(vec!["ipv4".into(), "packets".into()]).to_string(),
            "FAILED: ipv4, packets"
        );
        assert_eq!(
            Outcome::TimedOut(Duration::from_secs(3600)).to_string(),
            "TIMED OUT after 60 min"
        );
    }
}
