//! `cargo xtask demo`: the seed's hosting setup in namespaces, first as it
//! is (broken), then with mvbridge (fixed), with what crossed the uplink.

use std::net::Ipv4Addr;

use anyhow::Result;
use mvbridge_tests::daemon::{self, Daemon};
use mvbridge_tests::lab::{Lab, SHIM, WIRE};
use mvbridge_tests::traffic::ping_retry;
use mvbridge_tests::wire::WireTap;

const FROM: [&str; 5] = ["host", "natvm", "a", "b", "c"];
const TO: [&str; 5] = ["host", "a", "b", "c", "inet"];

fn label(lab: &Lab, name: &str) -> String {
    match name {
        "host" | "natvm" | "inet" => name.to_owned(),
        vm => format!("{vm} /{}", lab.spec(vm).prefix),
    }
}

/// Pings every pair, prints the grid, returns local frames seen on the wire.
fn matrix(lab: &Lab, title: &str) -> Result<usize> {
    println!("\n== {title} ==\n");
    let running: Vec<&str> = lab.guests.iter().map(|g| g.key).collect();
    let present = |n: &str| !matches!(n, "a" | "b" | "c") || running.contains(&n);
    print!("{:>10} |", "from \\ to");
    for to in TO {
        print!(" {:>8}", label(lab, to));
    }
    println!();
    let tap = WireTap::start(&lab.gw, WIRE)?;
    for from in FROM {
        print!("{:>10} |", label(lab, from));
        for to in TO {
            let cell = if from == to {
                "."
            } else if !present(from) || !present(to) {
                "absent"
            } else {
                let (ns, _) = lab.endpoint(from);
                let (_, addr): (_, Ipv4Addr) = lab.endpoint(to);
                if ping_retry(ns, addr, 1) {
                    "ok"
                } else {
                    "FAIL"
                }
            };
            print!(" {cell:>8}");
            use std::io::Write;
            std::io::stdout().flush()?;
        }
        println!();
    }
    let frames = tap.stop()?;
    let shim = lab.host_mac(SHIM).ok();
    let local = lab.local_frames(&frames, shim);
    println!(
        "\n  frames on the uplink's wire: {} in all, {} of them local traffic (host/NAT VM/VM pairs or the shim's MAC)",
        frames.len(),
        local.len()
    );
    Ok(local.len())
}

fn main() -> Result<()> {
    println!(
        "Building the seed's host in network namespaces (doc addresses: 203.0.113.0/24, 198.51.100.0/24):"
    );
    println!(
        "  gateway 203.0.113.129/26, host 203.0.113.157/32 on enp9s0, NAT VM 192.168.122.10 behind virbr0,"
    );
    println!(
        "  VM a 203.0.113.161/26 (macvtap0), VM b 203.0.113.162/26 (mvt-web, created by mvbridge),"
    );
    println!(
        "  VM c 203.0.113.163/32 with an on-link gateway (macvtap2), internet host 198.51.100.10."
    );
    let mut lab = Lab::seed()?;

    let before = matrix(&lab, "Without mvbridge")?;

    println!(
        "\n== mvbridge run --config {} ==",
        lab.dir.join("mvbridge.toml").display()
    );
    let config = lab.write_config("mvbridge.toml", &lab.config())?;
    println!("\n{}", lab.config());
    let mut mvbridge = Daemon::start(&lab.host, &config)?;
    lab.start_guest("b")?;
    print!("{}", mvbridge.log());

    let after = matrix(&lab, "With mvbridge")?;

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
    print!(
        "{}",
        mvbridge
            .log()
            .lines()
            .skip_while(|l| !l.contains("SIGTERM"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("\n\nLocal frames on the wire: {before} without mvbridge, {after} with it.");
    drop(lab);
    println!("Lab removed.");
    if after != 0 {
        anyhow::bail!("local traffic crossed the uplink with mvbridge running");
    }
    Ok(())
}
