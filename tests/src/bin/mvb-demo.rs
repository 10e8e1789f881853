//! `cargo xtask demo`: a hosted server's setup in namespaces, first as it
//! is (broken), then with mvbridge (fixed), over IPv4 and IPv6, with what
//! crossed the uplink's wire meanwhile.

use std::io::Write;
use std::net::IpAddr;

use anyhow::Result;
use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{Lab, SHIM, WIRE};
use mvbridge_tests::matrix::Family;
use mvbridge_tests::traffic::ping_retry;
use mvbridge_tests::wire::WireTap;

const FROM: [&str; 5] = ["host", "natvm", "a", "b", "c"];
const TO: [&str; 5] = ["host", "a", "b", "c", "inet"];

fn label(lab: &Lab, name: &str, family: Family) -> String {
    match (name, family) {
        ("host" | "natvm" | "inet", _) => name.to_owned(),
        (vm, Family::V4) => format!("{vm} /{}", lab.spec(vm).prefix),
        (vm, Family::V6) => format!("{vm} /{}", lab.spec(vm).prefix6),
    }
}

/// Pings every pair over both families, prints the grids, returns the
/// local frames seen on the wire meanwhile.
fn matrices(lab: &Lab, title: &str) -> Result<usize> {
    let tap = WireTap::start(&lab.gw, WIRE)?;
    matrix(lab, &format!("{title}, IPv4"), Family::V4)?;
    matrix(
        lab,
        &format!("{title}, IPv6 (guests route via fe80::1)"),
        Family::V6,
    )?;
    let frames = tap.stop()?;
    let local = lab.local_frames(&frames, lab.host_mac(SHIM).ok());
    println!(
        "\n  frames on the uplink's wire meanwhile: {} in all, {} of them local traffic\n  (host/NAT VM/VM pairs, their ARP and ND, or anything with the shim's MAC)",
        frames.len(),
        local.len()
    );
    Ok(local.len())
}

/// Pings every pair of one family and prints the grid.
fn matrix(lab: &Lab, title: &str, family: Family) -> Result<()> {
    println!("\n== {title} ==\n");
    let running: Vec<&str> = lab.guests.iter().map(|g| g.key).collect();
    let present = |n: &str| !matches!(n, "a" | "b" | "c") || running.contains(&n);
    print!("{:>10} |", "from \\ to");
    for to in TO {
        print!(" {:>8}", label(lab, to, family));
    }
    println!();
    for from in FROM {
        if family == Family::V6 && from == "natvm" {
            continue; // libvirt's NAT network has no public IPv6
        }
        print!("{:>10} |", label(lab, from, family));
        for to in TO {
            let cell = if from == to {
                "."
            } else if !present(from) || !present(to) {
                "absent"
            } else {
                let (ns, addr): (_, IpAddr) = match family {
                    Family::V4 => (lab.endpoint(from).0, lab.endpoint(to).1.into()),
                    Family::V6 => (lab.endpoint6(from).0, lab.endpoint6(to).1.into()),
                };
                if ping_retry(ns, addr, 1) {
                    "ok"
                } else {
                    "FAIL"
                }
            };
            print!(" {cell:>8}");
            std::io::stdout().flush()?;
        }
        println!();
    }
    Ok(())
}

fn main() -> Result<()> {
    println!("Building a hosted server in network namespaces (documentation addresses only):");
    println!(
        "  gateway 203.0.113.129/26, 2001:db8:0:1::1/64 and fe80::1; host 203.0.113.157/32 and"
    );
    println!("  2001:db8:0:1::2/64 on enp9s0; NAT VM 192.168.122.10 behind virbr0 (masqueraded);");
    println!("  internet host 198.51.100.10 / 2001:db8:ffff::10;");
    println!(
        "  VM a .161/26 + ::161/64 on macvtap0, VM b .162/26 + ::162/64 on mvt-web (created by mvbridge),"
    );
    println!(
        "  VM c .163/32 + ::163/128 with on-link gateways on macvtap2. Guests keep their stock config."
    );
    let mut lab = Lab::hosted()?;

    let before = matrices(&lab, "Without mvbridge")?;

    let config = lab.write_config("mvbridge.toml", &lab.config())?;
    println!("\n== mvbridge run --config {} ==\n", config.display());
    println!("{}", lab.config());
    let mut mvbridge = Daemon::start(&lab.host, &config)?;
    lab.start_guest("b")?;
    print!("{}", mvbridge.log());

    let after = matrices(&lab, "With mvbridge")?;

    let out = daemon::mvbridge(
        &lab.host,
        &["status", "--config", &config.display().to_string()],
    )?;
    println!(
        "\n== mvbridge status ==\n\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    println!("== SIGTERM ==");
    mvbridge.stop_with(libc::SIGTERM)?;
    let log = mvbridge.log();
    let tail: Vec<&str> = log.lines().skip_while(|l| !l.contains("SIGTERM")).collect();
    println!("{}", tail.join("\n"));
    println!("\nLocal frames on the uplink's wire: {before} without mvbridge, {after} with it.");
    drop(lab);
    println!("Lab removed.");
    if after != 0 {
        anyhow::bail!("local traffic crossed the uplink with mvbridge running");
    }
    Ok(())
}
