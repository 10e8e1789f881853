//! The reconcile loop, in order: [`world`] observes the kernel, [`plan`]
//! decides (pure), [`contents`] says what the tables must hold, [`apply`]
//! changes the difference; [`reconcile`] holds them together, with
//! [`learning`] (who may learn what) and [`problem_log`] (problems said
//! once). [`daemon`] runs it (`mvbridge run` and `down`), telling systemd
//! it is ready ([`notify`]) and removing everything at exit
//! ([`teardown`]).

pub mod apply;
pub mod contents;
pub mod daemon;
pub mod learning;
pub mod notify;
pub mod plan;
pub mod problem_log;
pub mod reconcile;
pub mod teardown;
pub mod world;
