//! Bad input gets one clear error and leaves the host exactly as it was.

use std::os::unix::process::CommandExt;
use std::process::Output;

use mvbridge_tests::bins;
use mvbridge_tests::daemon;
use mvbridge_tests::lab::{Lab, UPLINK};
use mvbridge_tests::state::{HostState, wait_programs_gone};

/// Runs `mvbridge run` with `config` and checks that it fails, says
/// `expect`, and changes nothing.
fn refused(lab: &Lab, config: &str, expect: &str) {
    let path = lab.write_config("bad.toml", config).unwrap();
    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    let out =
        daemon::mvbridge(&lab.host, &["run", "--config", &path.display().to_string()]).unwrap();
    check_refusal(lab, &before, &out, expect);
}

fn check_refusal(lab: &Lab, before: &HostState, out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted; stderr:\n{stderr}");
    assert!(
        stderr.contains(expect),
        "error does not say {expect:?}:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "want one clear error:\n{stderr}"
    );
    let mut after = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    if !after.programs.is_empty() {
        after.programs = wait_programs_gone();
    }
    assert_eq!(&after, before, "the host changed after: {stderr}");
}

fn vm(name: &str, interface: &str, extra: &str, addrs: &str) -> String {
    format!(
        "\n[[vm]]\nname = \"{name}\"\ninterface = \"{interface}\"\naddresses = [{addrs}]\n{extra}"
    )
}

fn base(lab: &Lab) -> String {
    format!(
        "uplink = \"{UPLINK}\"\nbpffs = \"{}\"\nattach = \"{}\"\n",
        lab.bpffs().display(),
        mvbridge_tests::lab::attach_mode()
    )
}

#[test]
fn config_mistakes_are_named() {
    let lab = Lab::build(Vec::new()).unwrap();
    let b = base(&lab);
    let a = "\"203.0.113.161\"";
    let cases = [
        ("uplink = \n".to_owned(), "does not parse"),
        (format!("{b}colour = \"blue\"\n"), "unknown field `colour`"),
        (
            format!("{b}{}", vm("a", "macvtap0", "", "\"203.0.113.300\"")),
            "\"203.0.113.300\" is not an IP address",
        ),
        (
            format!(
                "{b}{}",
                vm(
                    "a",
                    "macvtap0",
                    "create = true\nmac = \"52:54:00:00:00\"\n",
                    a
                )
            ),
            "is not a MAC address",
        ),
        (
            format!("{b}{}{}", vm("a", "t0", "", a), vm("b", "t1", "", a)),
            "203.0.113.161 is claimed by both",
        ),
        (
            format!("{b}{}", vm("a", "t0", "create = true\n", a)),
            "no mac",
        ),
    ];
    for (config, expect) in cases {
        refused(&lab, &config, expect);
    }
}

#[test]
fn links_that_do_not_fit_are_refused() {
    let lab = Lab::build(Vec::new()).unwrap();
    lab.host
        .ip(&[
            "link", "add", "veth-x", "type", "veth", "peer", "name", "veth-y",
        ])
        .unwrap();
    lab.host
        .ip(&[
            "link", "add", "other0", "type", "veth", "peer", "name", "other1",
        ])
        .unwrap();
    lab.host
        .ip(&[
            "link",
            "add",
            "link",
            "other0",
            "name",
            "mvt-other",
            "type",
            "macvtap",
            "mode",
            "bridge",
        ])
        .unwrap();
    lab.host
        .ip(&["link", "add", "br-x", "type", "bridge"])
        .unwrap();
    let b = base(&lab);
    let a = "\"203.0.113.161\"";
    let cases = [
        (b.replace(UPLINK, "eth7"), "uplink \"eth7\" does not exist"),
        (
            format!("{b}{}", vm("a", "veth-x", "", a)),
            "\"veth-x\" is a veth, not a macvtap",
        ),
        (
            format!("{b}{}", vm("a", "mvt-other", "", a)),
            "does not sit on the uplink enp9s0",
        ),
        (
            format!("{b}[shim]\nname = \"br-x\"\n"),
            "a link named \"br-x\" already exists",
        ),
        (
            format!(
                "{b}{}",
                vm(
                    "a",
                    "veth-y",
                    "create = true\nmac = \"52:54:00:00:00:01\"\n",
                    a
                )
            ),
            "\"veth-y\" already exists and is not mvbridge's",
        ),
        (
            format!(
                "{b}{}",
                vm(
                    "a",
                    "t0",
                    "create = true\nmac = \"52:54:00:00:00:01\"\n",
                    "\"203.0.113.157\""
                )
            ),
            "203.0.113.157 is one of the host's addresses",
        ),
    ];
    for (config, expect) in cases {
        refused(&lab, &config, expect);
    }
}

#[test]
fn a_kernel_refusal_midway_rolls_everything_back() {
    let lab = Lab::build(Vec::new()).unwrap();
    // A macvtap mvbridge does not know about holds this MAC; the kernel
    // only refuses the duplicate when mvbridge brings its own link up,
    // after the shim already exists.
    lab.host
        .ip(&[
            "link",
            "add",
            "link",
            UPLINK,
            "name",
            "stranger",
            "address",
            "52:54:00:00:00:77",
            "type",
            "macvtap",
            "mode",
            "bridge",
        ])
        .unwrap();
    lab.host.ip(&["link", "set", "stranger", "up"]).unwrap();
    let config = format!(
        "{}{}",
        base(&lab),
        vm(
            "a",
            "mvt-a",
            "create = true\nmac = \"52:54:00:00:00:77\"\n",
            "\"203.0.113.161\""
        )
    );
    refused(&lab, &config, "EADDRINUSE");
}

#[test]
fn leftovers_of_an_earlier_run_are_not_clobbered() {
    let lab = Lab::build(Vec::new()).unwrap();
    std::fs::create_dir_all(lab.bpffs()).unwrap();
    let c = std::ffi::CString::new(lab.bpffs().display().to_string()).unwrap();
    // SAFETY: valid C strings.
    unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let stale = aya::maps::HashMap::<aya::maps::MapData, [u8; 4], [u8; 16]>::create(4, 0).unwrap();
    stale.pin(lab.bpffs().join("MVB_LOCAL4")).unwrap();
    refused(
        &lab,
        &base(&lab),
        "pinned by an incompatible mvbridge version",
    );
}

#[test]
fn without_root_or_bpf_nothing_happens() {
    let lab = Lab::build(Vec::new()).unwrap();
    let path = lab.write_config("ok.toml", &base(&lab)).unwrap();
    let cfg = path.display().to_string();
    // nobody must reach both the binary and the config: the checkout's
    // target/ may be in a directory only root can enter.
    let mvbridge = bins::copy_for_anyone("mvbridge", &lab.dir).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();

    let before = HostState::capture(&lab.host, &lab.bpffs()).unwrap();
    let mut cmd = lab.host.command(mvbridge.to_str().unwrap()).unwrap();
    cmd.args(["run", "--config", &cfg]);
    // Drop to nobody after entering the namespace (Command::uid would drop
    // before our setns and make it fail).
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let out = cmd.output().unwrap();
    check_refusal(&lab, &before, &out, "must run as root");

    // A kernel (or sandbox) without bpf(): the syscall fails with ENOSYS.
    let mut cmd = lab.host.command(mvbridge.to_str().unwrap()).unwrap();
    cmd.args(["run", "--config", &cfg]);
    // SAFETY: only async-signal-safe calls (prctl) between fork and exec.
    unsafe { cmd.pre_exec(mvbridge_tests::sandbox::refuse_bpf(None, libc::ENOSYS)) };
    let out = cmd.output().unwrap();
    check_refusal(&lab, &before, &out, "no BPF support");
}
