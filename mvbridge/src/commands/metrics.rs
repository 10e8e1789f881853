//! The metrics endpoint (`metrics_listen`): the same report as `mvbridge
//! status`, as metrics a Prometheus server can scrape. HTTP is hyper's (a
//! deadline to send the request head, one for the whole connection, and a
//! cap on connections open at once); the exposition is the `prometheus`
//! crate's, in Prometheus' text format, which Prometheus itself and its
//! `promtool` read (the OpenMetrics text of the `prometheus-client` crate
//! names counter families without `_total`, which promtool's linter flags).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Result;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::commands::report::{self, Report};
use crate::config::Config;
use crate::control::world::Observer;
use crate::kernel::netlink::Netlink;

/// Prometheus' text format (what `promtool check metrics` lints).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Connections served at once; more are closed on arrival (a scraper
/// retries; a flood must not pile up sockets or reports).
pub const MAX_CONNECTIONS: usize = 8;
/// To send the request head after connecting.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// For a whole connection, answer included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds now (so a bad address fails the start) and serves in the
/// background.
pub async fn spawn(addr: SocketAddr, config: Arc<RwLock<Config>>, nl: Netlink) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics at /metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let (config, nl) = (config.clone(), nl.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, config.clone(), nl.clone()));
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                    Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
                    Err(_) => tracing::debug!("metrics connection timed out"),
                    Ok(Ok(())) => {}
                }
                drop(slot);
            });
        }
    });
    Ok(())
}

async fn answer(
    req: Request<Incoming>,
    config: Arc<RwLock<Config>>,
    nl: Netlink,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    if req.method() != Method::GET || !matches!(req.uri().path(), "/metrics" | "/") {
        return reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into());
    }
    let config = match config.read() {
        Ok(c) => c.clone(),
        Err(_) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "config lock poisoned\n".into(),
            );
        }
    };
    let mut observer = Observer::new(nl);
    match report::collect(&config, &mut observer).await {
        Ok(r) => match render(&r) {
            Ok(body) => reply(StatusCode::OK, CONTENT_TYPE, body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{}\n", crate::errno::chain(&e)),
        ),
    }
}

/// The report in Prometheus' text exposition format. The values are
/// the kernel's counters as read for this scrape: each scrape fills a
/// registry of its own.
pub fn render(r: &Report) -> prometheus::Result<String> {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };

    gauge(
        "mvbridge_attached",
        "1 while every hook of the datapath is attached.",
        &[],
    )?
    .with_label_values::<&str>(&[])
    .set(i64::from(r.attached));

    let packets = counter(
        "mvbridge_path_packets_total",
        "Frames steered, by path and protocol.",
        &["path", "proto"],
    )?;
    let bytes = counter(
        "mvbridge_path_bytes_total",
        "Bytes steered, by path and protocol.",
        &["path", "proto"],
    )?;
    for p in &r.paths {
        packets
            .with_label_values(&[p.path, p.proto])
            .inc_by(p.packets);
        bytes.with_label_values(&[p.path, p.proto]).inc_by(p.bytes);
    }

    let drops = counter(
        "mvbridge_drops_total",
        "Frames dropped, by reason.",
        &["reason"],
    )?;
    for d in &r.drops {
        drops.with_label_values(&[d.reason]).inc_by(d.count);
    }

    let live = gauge(
        "mvbridge_vm_live",
        "1 while the VM's link is present and steered.",
        &["vm"],
    )?;
    let vm_packets = counter(
        "mvbridge_vm_packets_total",
        "Frames steered for a VM, by direction.",
        &["vm", "direction"],
    )?;
    let vm_bytes = counter(
        "mvbridge_vm_bytes_total",
        "Bytes steered for a VM, by direction.",
        &["vm", "direction"],
    )?;
    let vm_dropped = counter(
        "mvbridge_vm_dropped_total",
        "Frames a VM sent that were dropped.",
        &["vm"],
    )?;
    for v in &r.vms {
        let vm = v.name.as_str();
        live.with_label_values(&[vm])
            .set(i64::from(v.status.is_live()));
        vm_dropped
            .with_label_values(&[vm])
            .inc_by(v.counters.dropped);
        let c = &v.counters;
        for (direction, t) in [
            ("to_host", &c.to_host),
            ("from_host", &c.from_host),
            ("to_vms", &c.to_vms),
            ("from_vms", &c.from_vms),
        ] {
            vm_packets
                .with_label_values(&[vm, direction])
                .inc_by(t.packets);
            vm_bytes.with_label_values(&[vm, direction]).inc_by(t.bytes);
        }
    }
    TextEncoder::new().encode_to_string(&registry.gather())
}
