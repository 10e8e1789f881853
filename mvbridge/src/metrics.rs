//! The OpenMetrics endpoint (`metrics_listen`): the same report as
//! `mvbridge status`, as counters a Prometheus server can scrape.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::netlink::Netlink;
use crate::report::{self, Report};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds now (so a bad address fails the start) and serves in the
/// background.
pub async fn spawn(addr: SocketAddr, config: Arc<RwLock<Config>>, nl: Netlink) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics at /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let config = config.read().map(|c| c.clone());
            let Ok(config) = config else {
                continue;
            };
            let nl = nl.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, &config, &nl).await {
                    tracing::debug!("metrics request failed: {e}");
                }
            });
        }
    });
    Ok(())
}

async fn serve(mut stream: TcpStream, config: &Config, nl: &Netlink) -> Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read up to the end of the request head; bodies are not expected.
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let (status, ctype, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        let mut observer = crate::world::Observer::new(nl.clone());
        let report = report::collect(config, &mut observer).await?;
        ("200 OK", CONTENT_TYPE, render(&report))
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The report in the OpenMetrics text format.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# TYPE mvbridge_attached gauge");
    let _ = writeln!(
        o,
        "# HELP mvbridge_attached 1 while every hook of the datapath is attached."
    );
    let _ = writeln!(o, "mvbridge_attached {}", u8::from(r.attached));

    let _ = writeln!(o, "# TYPE mvbridge_path_packets counter");
    let _ = writeln!(
        o,
        "# HELP mvbridge_path_packets Frames steered, by path and protocol."
    );
    for p in &r.paths {
        let _ = writeln!(
            o,
            "mvbridge_path_packets_total{{path=\"{}\",proto=\"{}\"}} {}",
            p.path, p.proto, p.packets
        );
    }
    let _ = writeln!(o, "# TYPE mvbridge_path_bytes counter");
    let _ = writeln!(o, "# UNIT mvbridge_path_bytes bytes");
    for p in &r.paths {
        let _ = writeln!(
            o,
            "mvbridge_path_bytes_total{{path=\"{}\",proto=\"{}\"}} {}",
            p.path, p.proto, p.bytes
        );
    }
    let _ = writeln!(o, "# TYPE mvbridge_drops counter");
    let _ = writeln!(o, "# HELP mvbridge_drops Frames dropped, by reason.");
    for d in &r.drops {
        let _ = writeln!(
            o,
            "mvbridge_drops_total{{reason=\"{}\"}} {}",
            d.reason, d.count
        );
    }

    let _ = writeln!(o, "# TYPE mvbridge_vm_live gauge");
    let _ = writeln!(
        o,
        "# HELP mvbridge_vm_live 1 while the VM's macvtap is present and steered."
    );
    for v in &r.vms {
        let _ = writeln!(
            o,
            "mvbridge_vm_live{{vm=\"{}\"}} {}",
            label(&v.name),
            u8::from(v.status.is_live())
        );
    }
    let _ = writeln!(o, "# TYPE mvbridge_vm_packets counter");
    let _ = writeln!(
        o,
        "# HELP mvbridge_vm_packets Frames steered for a VM, by direction."
    );
    for v in &r.vms {
        for (dir, t) in directions(v) {
            let _ = writeln!(
                o,
                "mvbridge_vm_packets_total{{vm=\"{}\",direction=\"{dir}\"}} {}",
                label(&v.name),
                t.packets
            );
        }
    }
    let _ = writeln!(o, "# TYPE mvbridge_vm_bytes counter");
    let _ = writeln!(o, "# UNIT mvbridge_vm_bytes bytes");
    for v in &r.vms {
        for (dir, t) in directions(v) {
            let _ = writeln!(
                o,
                "mvbridge_vm_bytes_total{{vm=\"{}\",direction=\"{dir}\"}} {}",
                label(&v.name),
                t.bytes
            );
        }
    }
    let _ = writeln!(o, "# TYPE mvbridge_vm_dropped counter");
    for v in &r.vms {
        let _ = writeln!(
            o,
            "mvbridge_vm_dropped_total{{vm=\"{}\"}} {}",
            label(&v.name),
            v.counters.dropped
        );
    }
    let _ = writeln!(o, "# EOF");
    o
}

fn directions(v: &report::VmRow) -> [(&'static str, &report::Traffic); 4] {
    let c = &v.counters;
    [
        ("to_host", &c.to_host),
        ("from_host", &c.from_host),
        ("to_vms", &c.to_vms),
        ("from_vms", &c.from_vms),
    ]
}
