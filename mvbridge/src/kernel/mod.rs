//! Talking to the kernel beyond the datapath: rtnetlink requests
//! ([`netlink`], and [`link_socket`] for VM namespaces) and notifications
//! ([`watch`], and [`poll_set`] to wait on every VM namespace's at once),
//! other network namespaces ([`netns`]), and faster RCU grace periods
//! while hooks change ([`rcu`]).

pub mod link_socket;
pub mod netlink;
pub mod netns;
pub mod poll_set;
pub mod rcu;
pub mod watch;
