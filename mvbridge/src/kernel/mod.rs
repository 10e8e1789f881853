//! Talking to the kernel beyond the datapath: rtnetlink requests
//! ([`netlink`], and [`link_socket`] for VM namespaces) and notifications
//! ([`watch`]), other network namespaces ([`netns`]), and faster RCU
//! grace periods while hooks change ([`rcu`]).

pub mod link_socket;
pub mod netlink;
pub mod netns;
pub mod rcu;
pub mod watch;
