//! rtnetlink notifications that can change what the datapath must do:
//! links appearing, going, changing, and addresses coming and going.

use futures_util::StreamExt;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use tokio::sync::mpsc;

/// Something happened; the reconcile loop looks at everything again, so
/// the event carries no detail.
#[derive(Debug)]
pub struct Changed;

/// Subscribes on a connection of its own (notifications caused by our own
/// requests would otherwise be swallowed by their replies) and forwards a
/// `Changed` for every relevant message.
pub fn subscribe() -> std::io::Result<mpsc::UnboundedReceiver<Changed>> {
    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])?;
    tokio::spawn(conn);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // The handle keeps the connection alive while we listen.
        let _handle = _handle;
        while let Some((msg, _)) = messages.next().await {
            let relevant = match msg.payload {
                NetlinkPayload::InnerMessage(m) => matches!(
                    m,
                    RouteNetlinkMessage::NewLink(_)
                        | RouteNetlinkMessage::DelLink(_)
                        | RouteNetlinkMessage::NewAddress(_)
                        | RouteNetlinkMessage::DelAddress(_)
                ),
                // Lost notifications: a full pass resynchronises anyway.
                NetlinkPayload::Overrun(_) => true,
                _ => false,
            };
            if relevant && tx.send(Changed).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
