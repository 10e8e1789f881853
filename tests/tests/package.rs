//! The Debian package and its unit under a real systemd as PID 1, checked
//! the way an admin would: `apt-get install ./mvbridge_*.deb`, `systemctl
//! start|reload|restart|stop`, `systemctl status`, the journal,
//! `mvbridge status`, `tc`, pings; an upgrade, a remove, a purge. The
//! service runs in the root network namespace, so that is the lab's host
//! here ([`HostLab`]): the uplink is a veth to a gateway namespace, the
//! VMs are guests on macvtaps (or, for a netns VM, a macvlan in a
//! namespace of its own).
//!
//! Only in the VM of `cargo xtask vmtest-package` (Debian 12 with systemd
//! 252 and kernel 6.1, or Debian 13 with systemd 257 and 6.12; no network): every test is `#[ignore]`d, so a plain
//! `cargo test` lists them as ignored, never as passed, and the VM runs
//! them with `--ignored` (and fails if any did not run). Asked to run
//! anywhere else they refuse (panic): they install and purge packages and
//! rebuild the root namespace's network. Each test starts from a machine
//! without mvbridge and leaves one ([`Vm`]'s drop purges the package and
//! removes the lab, also when the test fails).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mvbridge_tests::daemon::path_packets;
use mvbridge_tests::hostlab::HostLab;
use mvbridge_tests::lab::{HOST, SHIM, UPLINK, VmSpec, kernel_has_tcx, public_vms};
use mvbridge_tests::state::{HostState, one_program_per_hook, wait_programs_gone};
use mvbridge_tests::systemd::{
    Journal, Unit, apt_get, dpkg_status, eventually, installed_version, text,
};
use mvbridge_tests::traffic::{EchoFlood, FloodResult, ping, ping_retry};

const MVBRIDGE: Unit = Unit("mvbridge.service");
const CONFIG: &str = "/etc/mvbridge/mvbridge.toml";
/// The default pin directory, which the package's config keeps.
const PINS: &str = "/sys/fs/bpf/mvbridge";
const BINARY: &str = "/usr/sbin/mvbridge";
/// Made by `cargo xtask vmtest-package` in its VM's image, nowhere else
/// (xtask/src/vmtest/package.rs).
const MARKER_FILE: &str = "/etc/mvbridge-package-vm";

/// How long what should happen at once may take: everything is slow
/// under TCG, more so on a machine other VMs keep busy.
const SETTLE: Duration = Duration::from_secs(30);
const FLOOD_INTERVAL: Duration = Duration::from_millis(5);

/// The package built from this tree, and the same repacked as the next
/// Debian revision (`cargo xtask vmtest-package` puts both on its payload
/// disk).
fn deb() -> PathBuf {
    package_from("MVB_PACKAGE_DEB")
}

fn next_deb() -> PathBuf {
    package_from("MVB_PACKAGE_NEXT_DEB")
}

fn package_from(var: &str) -> PathBuf {
    let path =
        PathBuf::from(std::env::var_os(var).unwrap_or_else(|| panic!("{var} names no package")));
    assert!(path.is_file(), "{var}: no {}", path.display());
    path
}

/// A test's hold on the VM: made only inside the package VM; on drop,
/// pass or fail, purges the package and removes the lab, so the next
/// test starts from a machine without mvbridge.
struct Vm {
    /// What was logged before the test is not its business.
    journal: Journal,
    lab: Option<HostLab>,
}

impl Vm {
    fn enter() -> Vm {
        assert!(
            Path::new(MARKER_FILE).exists(),
            "refusing to run outside the VM of `cargo xtask vmtest-package` (no {MARKER_FILE}): \
             these tests install and purge the mvbridge package and rebuild the root network \
             namespace's links"
        );
        // Whatever an earlier test could not undo (it was killed).
        clean_up();
        Vm {
            journal: Journal::mark(),
            lab: None,
        }
    }

    fn with_lab(lab: HostLab) -> Vm {
        let mut vm = Vm::enter();
        vm.lab = Some(lab);
        vm
    }

    fn lab(&self) -> &HostLab {
        self.lab.as_ref().expect("a lab")
    }

    fn lab_mut(&mut self) -> &mut HostLab {
        self.lab.as_mut().expect("a lab")
    }

    /// The unit's journal since the test began, for messages.
    fn log(&self) -> String {
        self.journal.of(MVBRIDGE)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The package first: its prerm runs `mvbridge down`, which needs
        // the config's uplink still there. Then the lab: deleting the
        // uplink takes whatever a down could not (a broken config) with
        // it.
        let _ = apt_get(&["purge", "mvbridge"]);
        self.lab.take();
        clean_up();
    }
}

/// No package, no config, no pins, no drop-ins, nothing systemd remembers
/// of the unit.
fn clean_up() {
    if !dpkg_status("mvbridge").is_empty() {
        let _ = apt_get(&["purge", "mvbridge"]);
    }
    let _ = std::fs::remove_dir_all("/etc/mvbridge");
    let _ = std::fs::remove_dir_all(PINS);
    let _ = MVBRIDGE.systemctl("reset-failed");
}

/// `apt-get install` of a package file, as an admin does with what they
/// downloaded; asserts that it succeeds (apt has no network here: it may
/// need nothing but the file). Returns what apt and dpkg said.
fn install(deb: &Path) -> String {
    let path = deb.to_str().expect("a UTF-8 path");
    let out = apt_get(&["install", "--no-install-recommends", path]).unwrap();
    let said = text(&out);
    assert!(
        out.status.success(),
        "apt-get install {path} failed ({}):\n{said}",
        out.status
    );
    said
}

fn write_config(text: &str) {
    std::fs::write(CONFIG, text).unwrap();
}

/// A config naming the lab's uplink and the VMs `keys`: libvirt's by MAC
/// (as its README advises: libvirt renumbers macvtaps), those mvbridge
/// creates by name and MAC, kernel guests by interface and namespace.
/// Everything else is the package's default (pins under /sys/fs/bpf,
/// pidfile under /run).
fn config(lab: &HostLab, keys: &[&str]) -> String {
    let mut c = format!("uplink = \"{UPLINK}\"\n");
    for key in keys {
        let s = lab.spec(key);
        c.push_str(&format!(
            "\n[[vm]]\nname = \"{}\"\naddresses = [\"{}\", \"{}\"]\n",
            s.key, s.addr, s.addr6
        ));
        if s.kernel {
            c.push_str(&format!(
                "interface = \"eth0\"\nnetns = \"{}\"\n",
                lab.netns_of(key)
            ));
        } else if s.created_by_mvbridge {
            c.push_str(&format!(
                "interface = \"{}\"\ncreate = true\nmac = \"{}\"\n",
                s.interface, s.mac
            ));
        } else {
            c.push_str(&format!("mac = \"{}\"\n", s.mac));
        }
    }
    c
}

/// `mvbridge status --json` as an admin runs it from a shell: the
/// installed binary, the default config; with its exit status (0 only
/// while the datapath is attached).
fn status() -> (bool, serde_json::Value) {
    let out = Command::new(BINARY)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("mvbridge status --json: {e}: {}", text(&out)));
    (out.status.success(), json)
}

/// A VM's state in a status report ("live", "absent", ...); `None` when
/// the report has no such VM.
fn vm_state(status: &serde_json::Value, name: &str) -> Option<String> {
    status["vms"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .map(|v| v["state"].as_str().unwrap_or("?").to_owned())
}

/// How the report says the hooks are attached: "tc" for classic filters
/// (6.1: no TCX), "tcx" for TCX links.
fn hook_modes(status: &serde_json::Value) -> Vec<String> {
    status["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["mode"].as_str().unwrap_or("none").to_owned())
        .collect()
}

/// What of mvbridge's could be on the host: links, qdiscs, hooks, pins
/// (the programs loaded are checked on their own: the kernel frees them
/// lazily).
fn footprint(lab: &HostLab) -> HostState {
    let mut state = HostState::capture(&lab.host, Path::new(PINS)).unwrap();
    state.programs.clear();
    state
}

/// What `systemctl start` returned, asserted to be success.
fn start() {
    let out = MVBRIDGE.systemctl("start");
    assert!(
        out.status.success(),
        "systemctl start mvbridge: {}\n{}",
        text(&out),
        MVBRIDGE.status()
    );
}

/// Echo floods from the host to VM `key` and back, for a change that
/// must not lose a packet; they are flowing when this returns.
fn floods(lab: &HostLab, key: &str) -> [EchoFlood; 2] {
    let floods = [
        EchoFlood::start(&lab.host, lab.spec(key).addr, FLOOD_INTERVAL).unwrap(),
        EchoFlood::start(lab.guest(key), HOST, FLOOD_INTERVAL).unwrap(),
    ];
    for f in &floods {
        f.wait_for_replies(0, 20, SETTLE).unwrap();
    }
    floods
}

/// Lets the floods show the datapath forwards after the change, then
/// stops them and counts: host -> VM, VM -> host.
fn finish(floods: [EchoFlood; 2]) -> [FloodResult; 2] {
    for f in &floods {
        f.wait_for_replies(f.received(), 20, SETTLE).unwrap();
    }
    floods.map(|f| f.finish().unwrap())
}

/// The service stopped for good on a config that does not parse (exit
/// status 78, which the unit does not restart on), and `systemctl status
/// mvbridge` shows why.
fn status_shows_the_config_error() {
    let failed = eventually("the service failing on its config", SETTLE, || {
        MVBRIDGE.prop("ActiveState") == "failed"
    });
    assert!(failed.is_ok(), "{}", MVBRIDGE.status());
    assert_eq!(
        MVBRIDGE.prop("ExecMainStatus"),
        "78",
        "{}",
        MVBRIDGE.status()
    );
    let shown = MVBRIDGE.status();
    assert!(
        shown.contains("does not parse"),
        "systemctl status mvbridge:\n{shown}"
    );
}

#[test]
#[ignore = "needs the VM of `cargo xtask vmtest-package` (systemd as PID 1)"]
fn a_fresh_install_verifies_is_enabled_and_waits_for_an_uplink() {
    let vm = Vm::enter();
    let said = install(&deb());
    // postinst tells the admin what to do next.
    assert!(
        said.contains("starts once /etc/mvbridge/mvbridge.toml names an uplink"),
        "{said}"
    );

    // What the package put where an admin and the tools look.
    let listed = Command::new("dpkg")
        .args(["-L", "mvbridge"])
        .output()
        .unwrap();
    let listed = text(&listed);
    // The VM's root leaves out /usr/share/doc and /usr/share/man (dpkg's
    // path-exclude, as minimal images do): those are checked in the
    // package's list, the rest on disk too.
    for file in [
        "/usr/sbin/mvbridge",
        "/etc/mvbridge/mvbridge.toml",
        "/usr/share/man/man8/mvbridge.8.gz",
        "/usr/share/man/man8/mvbridge-run.8.gz",
        "/usr/share/bash-completion/completions/mvbridge",
        "/usr/share/zsh/vendor-completions/_mvbridge",
        "/usr/share/fish/vendor_completions.d/mvbridge.fish",
        "/usr/share/doc/mvbridge/copyright",
        "/usr/share/doc/mvbridge/changelog.Debian.gz",
    ] {
        let excluded = file.starts_with("/usr/share/doc/") || file.starts_with("/usr/share/man/");
        assert!(
            listed.lines().any(|l| l == file) && (excluded || Path::new(file).exists()),
            "{file} not installed; the package holds:\n{listed}"
        );
    }
    // The unit where systemd's packaged units go (/lib is /usr/lib here).
    assert!(
        listed
            .lines()
            .any(|l| l.ends_with("lib/systemd/system/mvbridge.service") && Path::new(l).exists()),
        "no unit installed; the package holds:\n{listed}"
    );
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/mvbridge.conffiles").unwrap();
    assert_eq!(conffiles.trim(), "/etc/mvbridge/mvbridge.toml");
    let completion =
        std::fs::read_to_string("/usr/share/bash-completion/completions/mvbridge").unwrap();
    assert!(
        completion.contains("reload") && completion.contains("status"),
        "the bash completion does not know the subcommands:\n{completion}"
    );

    // What systemd makes of the unit as installed: every directive known,
    // every path there, its man page found.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "mvbridge.service"])
        .output()
        .unwrap();
    assert!(
        verify.status.success() && text(&verify).trim().is_empty(),
        "systemd-analyze verify mvbridge.service ({}):\n{}",
        verify.status,
        text(&verify)
    );

    // Enabled, and postinst's start skipped by the unit's ExecCondition:
    // inactive, not failed; the journal says why.
    assert_eq!(MVBRIDGE.prop("UnitFileState"), "enabled");
    assert_eq!(
        (MVBRIDGE.prop("ActiveState"), MVBRIDGE.prop("Result")),
        ("inactive".to_owned(), "exec-condition".to_owned()),
        "{}",
        MVBRIDGE.status()
    );
    assert!(
        !MVBRIDGE.systemctl("is-failed").status.success(),
        "{}",
        MVBRIDGE.status()
    );
    vm.journal
        .wait_for(MVBRIDGE, &["names no uplink"], SETTLE)
        .unwrap();
    assert!(!Path::new(PINS).exists(), "pins without a start");
}

#[test]
#[ignore = "needs the VM of `cargo xtask vmtest-package` (systemd as PID 1)"]
fn start_reload_restart_and_stop_keep_the_datapath_forwarding() {
    let mut vm = Vm::with_lab(HostLab::new(public_vms()).unwrap());
    install(&deb());
    write_config(&config(vm.lab(), &["a", "c"]));

    // Start: Type=notify, so `systemctl start` returns once the daemon
    // said READY=1, which it says once the datapath is attached.
    start();
    let (attached, report) = status();
    assert!(
        attached,
        "READY=1 before the datapath was attached: {report}"
    );
    assert_eq!(MVBRIDGE.prop("ActiveState"), "active");
    assert_eq!(MVBRIDGE.prop("StatusText"), "datapath attached");
    assert_eq!(MVBRIDGE.prop("NRestarts"), "0");
    let pidfile = std::fs::read_to_string("/run/mvbridge.pid").unwrap();
    assert_eq!(pidfile.trim(), MVBRIDGE.main_pid().to_string());

    // What an admin sees from a shell: the pins, the hooks, the VMs.
    let pins = std::fs::read_dir(PINS).unwrap().count();
    assert!(pins > 0, "nothing pinned in {PINS}");
    let modes = hook_modes(&report);
    let want = if kernel_has_tcx() { "tcx" } else { "tc" };
    assert!(
        !modes.is_empty() && modes.iter().all(|m| m == want),
        "hooks attached as {modes:?}, not {want}: {report}"
    );
    if want == "tcx" {
        // The sandbox lets it expedite grace periods while TCX hooks
        // change (the unit's ReadWritePaths= for the knob), and it put
        // the knob back.
        let log = vm.log();
        assert!(!log.contains("not expediting RCU grace periods"), "{log}");
        let knob = std::fs::read_to_string("/sys/kernel/rcu_expedited").unwrap();
        assert_eq!(knob.trim(), "0", "the RCU knob was left set");
    }
    let filters = vm
        .lab()
        .host
        .run(&["tc", "filter", "show", "dev", UPLINK, "egress"])
        .unwrap_or_default();
    if want == "tc" {
        assert!(
            filters.contains("pref 1 bpf") && filters.contains("handle 0x4d56 mvb_uplink"),
            "tc filter show dev {UPLINK} egress:\n{filters}"
        );
    }
    for key in ["a", "c"] {
        assert_eq!(vm_state(&report, key).as_deref(), Some("live"), "{report}");
    }
    let lab = vm.lab();
    let before = path_packets(&report, "host->vm", "ipv4");
    assert!(ping_retry(&lab.host, lab.spec("a").addr, 3), "host -> VM a");
    assert!(ping_retry(&lab.host, lab.spec("c").addr, 3), "host -> VM c");
    let after = path_packets(&status().1, "host->vm", "ipv4");
    assert!(after >= before + 2, "host->vm counters {before} -> {after}");

    // Reload with VM b added (mvbridge creates its macvtap) and VM c
    // removed: `systemctl reload` returns at once (systemd 252: once
    // the daemon has its SIGHUP), and the change is applied.
    write_config(&config(lab, &["a", "b"]));
    let t0 = Instant::now();
    let out = MVBRIDGE.systemctl("reload");
    let took = t0.elapsed();
    assert!(out.status.success(), "systemctl reload: {}", text(&out));
    assert!(
        took < Duration::from_secs(5),
        "systemctl reload took {took:?}"
    );
    let applied = eventually("VM b live and VM c gone after the reload", SETTLE, || {
        let report = status().1;
        vm_state(&report, "b").as_deref() == Some("live") && vm_state(&report, "c").is_none()
    })
    .unwrap();
    println!(
        "reload: systemctl returned after {took:?}, status showed the change after {applied:?}"
    );
    eventually("the unit back to running after the reload", SETTLE, || {
        MVBRIDGE.prop("SubState") == "running"
    })
    .unwrap();
    vm.journal
        .wait_for(MVBRIDGE, &["config reloaded"], SETTLE)
        .unwrap();
    vm.lab_mut().start_guest("b").unwrap();
    let lab = vm.lab();
    assert!(ping_retry(&lab.host, lab.spec("b").addr, 3), "host -> VM b");

    // A broken config: the reload is rejected, the running one stays.
    let good = config(lab, &["a", "b"]);
    write_config("uplink = \n");
    let out = MVBRIDGE.systemctl("reload");
    assert!(out.status.success(), "systemctl reload: {}", text(&out));
    vm.journal
        .wait_for(MVBRIDGE, &["reload rejected", "does not parse"], SETTLE)
        .unwrap();
    eventually("the unit running after the rejected reload", SETTLE, || {
        MVBRIDGE.prop("SubState") == "running"
    })
    .unwrap();
    write_config(&good);
    let report = status().1;
    assert_eq!(vm_state(&report, "b").as_deref(), Some("live"), "{report}");
    assert!(ping(&lab.host, lab.spec("b").addr), "host -> VM b");

    // Restart under a flood: the old daemon leaves the datapath in place
    // (--keep), the new one adopts it; not a packet lost.
    let floods = floods(lab, "a");
    let old = MVBRIDGE.main_pid();
    let marked = Journal::mark();
    let out = MVBRIDGE.systemctl("restart");
    assert!(out.status.success(), "systemctl restart: {}", text(&out));
    let [to_vm, to_host] = finish(floods);
    println!("restart: host -> VM {to_vm:?}, VM -> host {to_host:?}");
    assert_ne!(MVBRIDGE.main_pid(), old, "the daemon was not restarted");
    assert_eq!(MVBRIDGE.prop("ActiveState"), "active");
    marked
        .wait_for(MVBRIDGE, &["adopted the pinned datapath"], SETTLE)
        .unwrap();
    assert_eq!(
        to_vm.sent, to_vm.received,
        "host -> VM lost packets across the restart"
    );
    assert_eq!(
        to_host.sent, to_host.received,
        "VM -> host lost packets across the restart"
    );
    one_program_per_hook(&lab.host).unwrap();

    // Stop: inactive, not failed, and the datapath still forwards.
    let out = MVBRIDGE.systemctl("stop");
    assert!(out.status.success(), "systemctl stop: {}", text(&out));
    assert_eq!(
        (MVBRIDGE.prop("ActiveState"), MVBRIDGE.prop("Result")),
        ("inactive".to_owned(), "success".to_owned()),
        "{}",
        vm.log()
    );
    let before = path_packets(&status().1, "host->vm", "ipv4");
    for key in ["a", "b"] {
        assert!(
            ping(&lab.host, lab.spec(key).addr),
            "host -> VM {key} with the daemon stopped"
        );
    }
    let (attached, report) = status();
    assert!(attached, "the datapath went with the daemon: {report}");
    assert!(path_packets(&report, "host->vm", "ipv4") >= before + 2);
    assert!(
        !vm.log().contains("Operation not permitted"),
        "{}",
        vm.log()
    );
}

#[test]
#[ignore = "needs the VM of `cargo xtask vmtest-package` (systemd as PID 1)"]
fn a_netns_vm_goes_live_under_the_units_sandbox() {
    let kernel_guest = |key, mac, last| VmSpec::kernel_guest(key, mac, last, 26, 64);
    let mut vm = Vm::with_lab(HostLab::new(Vec::new()).unwrap());
    vm.lab_mut()
        .add_kernel_guest(kernel_guest("k", "52:54:00:00:00:d4", 164))
        .unwrap();
    // Container "j" is started after the service, as containers are: its
    // namespace appears under /run/netns while the unit runs in a mount
    // namespace of its own (ProtectSystem=, PrivateTmp=, ...).
    let j = kernel_guest("j", "52:54:00:00:00:d6", 166);
    let mut with_j = config(vm.lab(), &["k"]);
    with_j.push_str(&format!(
        "\n[[vm]]\nname = \"j\"\naddresses = [\"{}\"]\ninterface = \"eth0\"\nnetns = \"{}\"\n",
        j.addr,
        vm.lab().netns_of("j")
    ));
    install(&deb());
    write_config(&with_j);
    start();

    let report = status().1;
    assert_eq!(vm_state(&report, "k").as_deref(), Some("live"), "{report}");
    let lab = vm.lab();
    assert!(
        ping_retry(&lab.host, lab.spec("k").addr, 3),
        "host -> netns VM k"
    );
    assert!(ping_retry(lab.guest("k"), HOST, 3), "netns VM k -> host");

    vm.lab_mut().add_kernel_guest(j.clone()).unwrap();
    eventually(
        "netns VM j live once its namespace appeared",
        SETTLE,
        || vm_state(&status().1, "j").as_deref() == Some("live"),
    )
    .unwrap();
    let lab = vm.lab();
    assert!(ping_retry(&lab.host, j.addr, 3), "host -> netns VM j");
    assert_eq!(MVBRIDGE.prop("ActiveState"), "active");
    let log = vm.log();
    for refused in [
        "Operation not permitted",
        "Permission denied",
        "EPERM",
        "EACCES",
    ] {
        assert!(
            !log.contains(refused),
            "the sandbox refused something:\n{log}"
        );
    }
}

#[test]
#[ignore = "needs the VM of `cargo xtask vmtest-package` (systemd as PID 1)"]
fn an_upgrade_under_a_ping_flood_loses_nothing_and_runs_the_new_package() {
    let vm = Vm::with_lab(HostLab::new(public_vms()).unwrap());
    install(&deb());
    let written = config(vm.lab(), &["a", "c"]);
    write_config(&written);
    start();
    let lab = vm.lab();
    let old = MVBRIDGE.main_pid();
    let next = next_deb();
    let new_version = String::from_utf8(
        Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&next)
            .arg("Version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();

    let floods = floods(lab, "a");
    let marked = Journal::mark();
    let t0 = Instant::now();
    install(&next);
    let took = t0.elapsed();
    let [to_vm, to_host] = finish(floods);
    println!("upgrade: apt-get took {took:?}; host -> VM {to_vm:?}, VM -> host {to_host:?}");

    assert_eq!(
        installed_version("mvbridge").as_deref(),
        Some(new_version.trim())
    );
    let new = MVBRIDGE.main_pid();
    assert!(
        new != 0 && new != old,
        "the daemon was not restarted ({old} -> {new})"
    );
    assert_eq!(MVBRIDGE.prop("ActiveState"), "active", "{}", vm.log());
    // The daemon runs the binary the new package installed, not the old
    // one dpkg replaced (that would read "... (deleted)").
    let exe = std::fs::read_link(format!("/proc/{new}/exe")).unwrap();
    assert_eq!(exe, Path::new(BINARY));
    marked
        .wait_for(MVBRIDGE, &["adopted the pinned datapath"], SETTLE)
        .unwrap();
    assert_eq!(
        to_vm.sent, to_vm.received,
        "host -> VM lost packets across the upgrade"
    );
    assert_eq!(
        to_host.sent, to_host.received,
        "VM -> host lost packets across the upgrade"
    );
    // The admin's config is theirs: the upgrade kept it as it was.
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), written);
    one_program_per_hook(&lab.host).unwrap();
}

#[test]
#[ignore = "needs the VM of `cargo xtask vmtest-package` (systemd as PID 1)"]
fn an_upgrade_with_a_config_that_does_not_parse_leaves_the_datapath_forwarding() {
    let vm = Vm::with_lab(HostLab::new(public_vms()).unwrap());
    install(&deb());
    write_config(&config(vm.lab(), &["a"]));
    start();
    let lab = vm.lab();
    assert!(ping_retry(&lab.host, lab.spec("a").addr, 3));

    // The admin broke the config (and did not reload); then the upgrade
    // restarts the service: the new daemon cannot start, the package
    // installs all the same, and the datapath forwards on.
    write_config("uplink = \"enp9s0\"\n[[vm]\n");
    install(&next_deb());
    assert!(installed_version("mvbridge").is_some());
    let state = MVBRIDGE.prop("ActiveState");
    assert_ne!(state, "active", "{}", MVBRIDGE.status());
    status_shows_the_config_error();
    assert!(
        ping(&lab.host, lab.spec("a").addr),
        "the datapath stopped forwarding"
    );
    assert!(
        footprint(lab)
            .hooks
            .contains(&format!("{UPLINK} egress mvb_uplink")),
        "the uplink's hook went"
    );
}

#[test]
#[ignore = "needs the VM of `cargo xtask vmtest-package` (systemd as PID 1)"]
fn an_install_with_a_config_that_does_not_parse_succeeds_and_sets_nothing_up() {
    let vm = Vm::with_lab(HostLab::new(public_vms()).unwrap());
    let before = footprint(vm.lab());
    // A host where the package was removed (its config kept) and the
    // config then edited into something that does not parse.
    install(&deb());
    let out = apt_get(&["remove", "mvbridge"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(dpkg_status("mvbridge"), "rc");
    write_config(&format!("{}\n[[vm]\n", config(vm.lab(), &["a"])));

    let said = install(&deb());
    assert_ne!(MVBRIDGE.prop("ActiveState"), "active", "{said}");
    status_shows_the_config_error();
    assert_eq!(
        footprint(vm.lab()),
        before,
        "a failed start set something up"
    );
}

#[test]
#[ignore = "needs the VM of `cargo xtask vmtest-package` (systemd as PID 1)"]
fn a_missing_uplink_is_retried_until_it_appears_and_nothing_is_half_set_up() {
    let mut vm = Vm::with_lab(HostLab::without_uplink(public_vms()).unwrap());
    install(&deb());
    write_config(&config(vm.lab(), &["a"]));
    let before = footprint(vm.lab());

    // At boot the NIC may come late (a slow driver, firmware loading,
    // renaming): the service fails, saying why, and tries again.
    let out = MVBRIDGE.systemctl_with(&["start", "--no-block"]);
    assert!(out.status.success(), "{}", text(&out));
    vm.journal
        .wait_for(MVBRIDGE, &["uplink \"enp9s0\" does not exist"], SETTLE)
        .unwrap();
    // Longer than systemd's default start limit (5 starts in 10 s): a
    // unit within it would have given up for good by now. Between two
    // tries (the daemon gone, systemd waiting to start it again) nothing
    // of a failed start may be left; what a try does while it runs is
    // its own business.
    let t0 = Instant::now();
    let mut between = 0;
    while t0.elapsed() < Duration::from_secs(20) {
        assert_ne!(
            MVBRIDGE.prop("ActiveState"),
            "failed",
            "the service gave up on the uplink: {}\n{}",
            MVBRIDGE.prop("Result"),
            vm.log()
        );
        let waiting = || (MVBRIDGE.prop("SubState"), MVBRIDGE.prop("NRestarts"));
        let now = waiting();
        if now.0 == "auto-restart" {
            let seen = footprint(vm.lab());
            if waiting() == now {
                assert_eq!(seen, before, "a failed start left something behind");
                between += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let tries: u32 = MVBRIDGE.prop("NRestarts").parse().unwrap();
    assert!(tries >= 2, "{tries} restarts in 20 s:\n{}", vm.log());
    assert!(between >= 2, "looked between two tries {between} times");

    // The NIC appears: the next try gets it.
    vm.lab_mut().add_uplink().unwrap();
    let took = eventually("the service up once the uplink appeared", SETTLE, || {
        MVBRIDGE.prop("ActiveState") == "active"
    })
    .unwrap();
    println!("uplink missing: {tries} restarts in 20 s, up {took:?} after it appeared");
    let (attached, report) = status();
    assert!(attached, "{report}");
    let lab = vm.lab();
    assert!(ping_retry(&lab.host, lab.spec("a").addr, 3), "host -> VM a");
}

#[test]
#[ignore = "needs the VM of `cargo xtask vmtest-package` (systemd as PID 1)"]
fn remove_keeps_the_config_reinstall_starts_again_and_purge_leaves_nothing() {
    let mut vm = Vm::with_lab(HostLab::new(public_vms()).unwrap());
    let before = footprint(vm.lab());
    install(&deb());
    let written = config(vm.lab(), &["a", "b", "c"]);
    write_config(&written);
    start();
    vm.lab_mut().start_guest("b").unwrap();
    let lab = vm.lab();
    for key in ["a", "b"] {
        assert!(
            ping_retry(&lab.host, lab.spec(key).addr, 3),
            "host -> VM {key}"
        );
    }
    let up = footprint(lab);
    assert!(
        up.links
            .iter()
            .any(|l| l.starts_with(&format!("{SHIM} macvlan")))
            && up.links.iter().any(|l| l.starts_with("mvt-web macvtap")),
        "{up:?}"
    );

    // Remove: the service stops, `mvbridge down` takes the datapath away
    // (a created macvtap, the shim, filters, qdiscs, pins); the config
    // stays.
    let out = apt_get(&["remove", "mvbridge"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(dpkg_status("mvbridge"), "rc");
    assert!(!Path::new(BINARY).exists());
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), written);
    assert_eq!(footprint(lab), before, "apt-get remove left the datapath");
    assert!(wait_programs_gone().is_empty(), "programs still loaded");
    assert!(
        !ping(&lab.host, lab.spec("a").addr),
        "host -> VM a without mvbridge"
    );

    // Re-install: the kept config names the uplink, so it starts again.
    install(&deb());
    eventually("the service active again", SETTLE, || {
        MVBRIDGE.prop("ActiveState") == "active"
    })
    .unwrap();
    assert!(status().0, "{}", status().1);
    assert!(
        ping_retry(&lab.host, lab.spec("a").addr, 3),
        "host -> VM a after re-install"
    );

    // Purge: nothing of it left, on the host or in systemd.
    let out = apt_get(&["purge", "mvbridge"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(dpkg_status("mvbridge"), "");
    assert_eq!(
        footprint(lab),
        before,
        "apt-get purge left something behind"
    );
    assert!(wait_programs_gone().is_empty(), "programs still loaded");
    for gone in [
        BINARY,
        "/etc/mvbridge",
        PINS,
        "/usr/lib/systemd/system/mvbridge.service",
        "/etc/systemd/system/multi-user.target.wants/mvbridge.service",
        "/etc/systemd/system/mvbridge.service",
    ] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} is still there after the purge"
        );
    }
    assert_eq!(MVBRIDGE.prop("LoadState"), "not-found");
}
