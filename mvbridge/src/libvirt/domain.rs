//! A libvirt domain as mvbridge reads it from its XML: its name, its
//! interfaces, and what its mvbridge metadata declares. Pure, and tested
//! against XML captured from a real libvirtd (`tests/fixtures/libvirt/`).
//!
//! The metadata lives in the domain's `<metadata>`, in mvbridge's XML
//! namespace, one `interface` per NIC, matched by MAC:
//!
//! ```xml
//! <metadata>
//!   <mvbridge:vm xmlns:mvbridge="urn:mvbridge:vm:1">
//!     <mvbridge:interface mac="52:54:00:aa:00:01">
//!       <mvbridge:address>203.0.113.161</mvbridge:address>
//!       <mvbridge:address>2001:db8:0:1::161</mvbridge:address>
//!       <mvbridge:learn>203.0.113.160/28</mvbridge:learn>
//!     </mvbridge:interface>
//!   </mvbridge:vm>
//! </metadata>
//! ```
//!
//! `virsh metadata DOMAIN urn:mvbridge:vm:1 --key mvbridge --set '<vm>...</vm>'`
//! writes it (libvirt puts every element of it into the namespace).

use std::net::IpAddr;

use roxmltree::{Document, Node};

use crate::config::{MacAddr, Prefix, parse_address};

/// mvbridge's metadata namespace.
pub const NAMESPACE: &str = "urn:mvbridge:vm:1";
/// The prefix `virsh metadata --key` is given, and the docs use.
pub const KEY: &str = "mvbridge";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    pub active: bool,
    /// Every `<interface>` with a MAC, in the XML's order.
    pub nics: Vec<Nic>,
    pub metadata: Metadata,
}

/// One of the domain's network interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub mac: MacAddr,
    /// `type`: "direct" for a macvtap, "network", "bridge", ...
    pub kind: String,
    /// `<source dev=...>`: the macvtap's lower device.
    pub source: Option<String>,
    /// `<source mode=...>`: bridge, vepa, private, passthrough.
    pub mode: Option<String>,
    /// `<target dev=...>`: the macvtap's name while the domain runs.
    pub target: Option<String>,
}

/// What the domain's mvbridge metadata says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Metadata {
    /// No element in mvbridge's namespace: not mvbridge's business.
    Absent,
    Declared(Vec<Declared>),
    /// It does not parse: the field and why.
    Invalid(MetadataError),
}

/// Why a domain's XML cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("domain XML does not parse")]
    Xml(#[source] roxmltree::Error),
    #[error("not a domain's XML (root element <{0}>)")]
    NotADomain(String),
    #[error("domain XML has no <name>")]
    NoName,
    #[error("domain {0:?} has no <uuid>")]
    NoUuid(String),
}

/// What is wrong with a domain's mvbridge metadata, naming the element
/// or field (`at`: "interface 2", or "interface MAC" once its MAC reads).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("<{element}> has an unknown attribute {attribute:?}")]
    RootAttribute { element: String, attribute: String },
    #[error("unknown element <{0}> (want <interface mac=...>)")]
    NotAnInterface(String),
    #[error("{at}: unknown attribute {attribute:?}")]
    UnknownAttribute { at: String, attribute: String },
    #[error("{at} has no mac attribute")]
    NoMac { at: String },
    /// `why`: the MAC parser's words.
    #[error("{at} mac: {why}")]
    BadMac { at: String, why: String },
    #[error("{at} is declared twice")]
    DeclaredTwice { at: String },
    /// `why`: the address parser's words, which name the field.
    #[error("{why}")]
    BadAddress { why: String },
    #[error("{at} lists address {address} twice")]
    AddressTwice { at: String, address: IpAddr },
    /// `why`: the prefix parser's words.
    #[error("{at} learn: {why}")]
    BadLearn { at: String, why: String },
    #[error("{at}: unknown element <{element}> (want <address> or <learn>)")]
    UnknownField { at: String, element: String },
    #[error("{at} has no address (and learns none)")]
    NothingDeclared { at: String },
    #[error("declares no <interface>")]
    NoInterface,
}

/// One interface the metadata declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub mac: MacAddr,
    pub addresses: Vec<IpAddr>,
    pub learn: Vec<Prefix>,
}

impl Domain {
    /// Reads a domain's XML (`virsh dumpxml`); `active`: whether it runs
    /// (the API says so; the XML only hints at it).
    pub fn parse(xml: &str, active: bool) -> Result<Domain, DomainError> {
        let doc = Document::parse(xml).map_err(DomainError::Xml)?;
        let root = doc.root_element();
        if root.tag_name().name() != "domain" {
            return Err(DomainError::NotADomain(root.tag_name().name().to_owned()));
        }
        let text_of = |name: &str| {
            child(root, name)
                .and_then(|n| n.text())
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        };
        let name = text_of("name").ok_or(DomainError::NoName)?;
        let uuid = text_of("uuid").ok_or_else(|| DomainError::NoUuid(name.clone()))?;
        let mut nics = Vec::new();
        if let Some(devices) = child(root, "devices") {
            for iface in children(devices, "interface") {
                // An interface without a MAC gets one from libvirt when it
                // starts; until then nothing can match it.
                let Some(mac) = child(iface, "mac")
                    .and_then(|m| m.attribute("address"))
                    .and_then(|m| m.parse::<MacAddr>().ok())
                else {
                    continue;
                };
                let source = child(iface, "source");
                nics.push(Nic {
                    mac,
                    kind: iface.attribute("type").unwrap_or("").to_owned(),
                    source: source.and_then(|s| s.attribute("dev")).map(str::to_owned),
                    mode: source.and_then(|s| s.attribute("mode")).map(str::to_owned),
                    target: child(iface, "target")
                        .and_then(|t| t.attribute("dev"))
                        .map(str::to_owned),
                });
            }
        }
        let metadata = match child(root, "metadata").and_then(ours) {
            None => Metadata::Absent,
            Some(element) => match parse_metadata(element) {
                Ok(declared) => Metadata::Declared(declared),
                Err(why) => Metadata::Invalid(why),
            },
        };
        Ok(Domain {
            name,
            uuid,
            active,
            nics,
            metadata,
        })
    }

    pub fn nic(&self, mac: MacAddr) -> Option<&Nic> {
        self.nics.iter().find(|n| n.mac == mac)
    }
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    children(node, name).next()
}

fn children<'a, 'i: 'a>(node: Node<'a, 'i>, name: &str) -> impl Iterator<Item = Node<'a, 'i>> {
    let name = name.to_owned();
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// mvbridge's element among `<metadata>`'s children.
fn ours<'a, 'i>(metadata: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    metadata
        .children()
        .find(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE))
}

/// An element of ours: in mvbridge's namespace (or in none, as a
/// hand-written `<metadata>` may leave its children).
fn is_ours(node: &Node, name: &str) -> bool {
    node.tag_name().name() == name && matches!(node.tag_name().namespace(), None | Some(NAMESPACE))
}

/// The metadata's interfaces. Everything it holds must make sense, like
/// a `[[vm]]` section: an unknown element or attribute is an error, not
/// something to skip silently.
fn parse_metadata(root: Node) -> Result<Vec<Declared>, MetadataError> {
    if let Some(a) = root.attributes().next() {
        return Err(MetadataError::RootAttribute {
            element: root.tag_name().name().to_owned(),
            attribute: a.name().to_owned(),
        });
    }
    let mut out: Vec<Declared> = Vec::new();
    for (i, iface) in root.children().filter(Node::is_element).enumerate() {
        let at = format!("interface {}", i + 1);
        if !is_ours(&iface, "interface") {
            return Err(MetadataError::NotAnInterface(
                iface.tag_name().name().to_owned(),
            ));
        }
        if let Some(a) = iface.attributes().find(|a| a.name() != "mac") {
            return Err(MetadataError::UnknownAttribute {
                at,
                attribute: a.name().to_owned(),
            });
        }
        let Some(mac) = iface.attribute("mac") else {
            return Err(MetadataError::NoMac { at });
        };
        let mac: MacAddr = mac
            .parse()
            .map_err(|why| MetadataError::BadMac { at, why })?;
        let at = format!("interface {mac}");
        if out.iter().any(|d| d.mac == mac) {
            return Err(MetadataError::DeclaredTwice { at });
        }
        let mut addresses = Vec::new();
        let mut learn = Vec::new();
        for field in iface.children().filter(Node::is_element) {
            let text = field.text().unwrap_or("").trim();
            if is_ours(&field, "address") {
                let address = parse_address(&format!("{at} address"), text)
                    .map_err(|why| MetadataError::BadAddress { why })?;
                if addresses.contains(&address) {
                    return Err(MetadataError::AddressTwice { at, address });
                }
                addresses.push(address);
            } else if is_ours(&field, "learn") {
                let prefix = text
                    .parse::<Prefix>()
                    .map_err(|why| MetadataError::BadLearn {
                        at: at.clone(),
                        why,
                    })?;
                learn.push(prefix);
            } else {
                return Err(MetadataError::UnknownField {
                    at,
                    element: field.tag_name().name().to_owned(),
                });
            }
        }
        if addresses.is_empty() && learn.is_empty() {
            return Err(MetadataError::NothingDeclared { at });
        }
        out.push(Declared {
            mac,
            addresses,
            learn,
        });
    }
    if out.is_empty() {
        return Err(MetadataError::NoInterface);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What libvirtd 9.0 gave a `started` hook for a running domain (lab
    /// capture), with metadata of an older draft namespace.
    const STARTED: &str = include_str!("../../../tests/fixtures/libvirt/started.xml");
    /// The same domain as `virsh dumpxml` shows it once stopped: no
    /// `<target>` any more.
    const STOPPED: &str = include_str!("../../../tests/fixtures/libvirt/stopped.xml");
    /// A running domain with a second direct NIC hot-plugged and
    /// mvbridge's metadata set by `virsh metadata --key mvbridge --set`
    /// (libvirtd 9.0, `virsh dumpxml` in the integration test's lab).
    const TWO_NICS: &str = include_str!("../../../tests/fixtures/libvirt/two-nics.xml");

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_captured_running_domain() {
        let d = Domain::parse(STARTED, true).unwrap();
        assert_eq!(d.name, "vm1");
        assert_eq!(d.uuid, "202f1956-cafc-49b5-855e-9ad4425ec2b2");
        assert_eq!(
            d.nics,
            vec![Nic {
                mac: mac("52:54:00:aa:00:01"),
                kind: "direct".into(),
                source: Some("uplink0".into()),
                mode: Some("bridge".into()),
                target: Some("macvtap0".into()),
            }]
        );
        // Metadata in someone else's namespace is not ours.
        assert_eq!(d.metadata, Metadata::Absent);
    }

    #[test]
    fn a_stopped_domain_has_no_target() {
        let d = Domain::parse(STOPPED, false).unwrap();
        assert!(!d.active);
        assert_eq!(d.nics[0].target, None);
        assert_eq!(d.nics[0].source.as_deref(), Some("uplink0"));
    }

    #[test]
    fn metadata_for_two_nics() {
        let d = Domain::parse(TWO_NICS, true).unwrap();
        assert_eq!(d.nics.len(), 2);
        let Metadata::Declared(declared) = &d.metadata else {
            panic!("{:?}", d.metadata);
        };
        assert_eq!(
            declared,
            &vec![
                Declared {
                    mac: mac("52:54:00:aa:00:01"),
                    addresses: vec![
                        "203.0.113.171".parse().unwrap(),
                        "2001:db8:0:1::171".parse().unwrap()
                    ],
                    learn: vec![],
                },
                Declared {
                    mac: mac("52:54:00:aa:00:03"),
                    addresses: vec!["203.0.113.173".parse().unwrap()],
                    learn: vec![],
                },
            ]
        );
        assert_eq!(
            d.nic(mac("52:54:00:aa:00:03")).unwrap().target.as_deref(),
            Some("macvtap3")
        );
        assert_eq!(
            d.nic(mac("52:54:00:aa:00:03")).unwrap().source.as_deref(),
            Some("enp9s0")
        );
    }

    fn with_metadata(inner: &str) -> String {
        format!(
            "<domain type='qemu'><name>d</name><uuid>u</uuid><metadata>\
             <mvbridge:vm xmlns:mvbridge='{NAMESPACE}'>{inner}</mvbridge:vm>\
             </metadata></domain>"
        )
    }

    fn invalid(inner: &str) -> String {
        match Domain::parse(&with_metadata(inner), true).unwrap().metadata {
            Metadata::Invalid(why) => why.to_string(),
            other => panic!("accepted {inner:?}: {other:?}"),
        }
    }

    #[test]
    fn children_without_a_namespace_count_as_ours() {
        let d = Domain::parse(
            &with_metadata(
                "<interface mac='52:54:00:00:00:01'><address>203.0.113.5</address><learn>2001:db8:5::/64</learn></interface>",
            ),
            true,
        )
        .unwrap();
        assert_eq!(
            d.metadata,
            Metadata::Declared(vec![Declared {
                mac: mac("52:54:00:00:00:01"),
                addresses: vec!["203.0.113.5".parse().unwrap()],
                learn: vec!["2001:db8:5::/64".parse().unwrap()],
            }])
        );
    }

    #[test]
    fn bad_metadata_names_the_field() {
        let cases = [
            ("", "declares no <interface>"),
            ("<mvbridge:nic/>", "unknown element <nic>"),
            (
                "<mvbridge:interface><mvbridge:address>203.0.113.5</mvbridge:address></mvbridge:interface>",
                "interface 1 has no mac attribute",
            ),
            (
                "<mvbridge:interface mac='52:54:00:zz:00:01'/>",
                "interface 1 mac: \"52:54:00:zz:00:01\" is not a MAC address",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01' name='x'/>",
                "interface 1: unknown attribute \"name\"",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01'><mvbridge:address>203.0.113.300</mvbridge:address></mvbridge:interface>",
                "interface 52:54:00:00:00:01 address: \"203.0.113.300\" is not an IP address",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01'><mvbridge:address>203.0.113.5/26</mvbridge:address></mvbridge:interface>",
                "has a prefix length",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01'><mvbridge:address>ff02::1</mvbridge:address></mvbridge:interface>",
                "not a unicast address",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01'><mvbridge:learn>203.0.113.0/40</mvbridge:learn></mvbridge:interface>",
                "interface 52:54:00:00:00:01 learn: \"203.0.113.0/40\" is not a prefix",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01'><mvbridge:adress>203.0.113.5</mvbridge:adress></mvbridge:interface>",
                "unknown element <adress>",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01'/>",
                "has no address (and learns none)",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01'><mvbridge:address>203.0.113.5</mvbridge:address><mvbridge:address>203.0.113.5</mvbridge:address></mvbridge:interface>",
                "lists address 203.0.113.5 twice",
            ),
            (
                "<mvbridge:interface mac='52:54:00:00:00:01'><mvbridge:address>203.0.113.5</mvbridge:address></mvbridge:interface><mvbridge:interface mac='52:54:00:00:00:01'><mvbridge:address>203.0.113.6</mvbridge:address></mvbridge:interface>",
                "interface 52:54:00:00:00:01 is declared twice",
            ),
        ];
        for (inner, want) in cases {
            let got = invalid(inner);
            assert!(got.contains(want), "{inner:?}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn xml_that_is_no_domain() {
        let why = |xml: &str| crate::errno::chain(&Domain::parse(xml, true).unwrap_err());
        let unparsed = why("<domain>");
        assert!(unparsed.contains("does not parse"), "{unparsed}");
        // The XML parser's reason comes along.
        assert!(
            unparsed.len() > "domain XML does not parse".len(),
            "{unparsed}"
        );
        assert!(why("<network/>").contains("not a domain"));
        assert!(why("<domain><uuid>u</uuid></domain>").contains("no <name>"));
        assert!(why("<domain><name>d</name></domain>").contains("domain \"d\" has no <uuid>"));
    }
}
