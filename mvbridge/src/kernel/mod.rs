//! Talking to the kernel beyond the datapath: rtnetlink requests
//! ([`netlink`]) and notifications ([`watch`]), and other network
//! namespaces ([`netns`]).

pub mod netlink;
pub mod netns;
pub mod watch;
