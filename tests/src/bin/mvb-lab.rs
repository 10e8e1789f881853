//! Builds the hosted-server lab and keeps it until Enter or a signal, for poking
//! at by hand: `ip netns` lists its namespaces, `mvb-lab --with-mvbridge`
//! also starts the daemon. Everything is removed on exit.

use std::io::BufRead;

use anyhow::Result;
use mvbridge_tests::daemon::Daemon;
use mvbridge_tests::lab::Lab;

fn main() -> Result<()> {
    let with_mvbridge = std::env::args().any(|a| a == "--with-mvbridge");
    let mut lab = Lab::hosted()?;
    let config = lab.write_config("mvbridge.toml", &lab.config())?;
    let _daemon = if with_mvbridge {
        let d = Daemon::start(&lab.host, &config)?;
        lab.start_guest("b")?;
        Some(d)
    } else {
        None
    };
    println!(
        "lab {} is up; namespaces {}-*; config {}",
        lab.id,
        lab.id,
        config.display()
    );
    println!("press Enter (or send SIGINT/SIGTERM) to tear it down");
    wait_for_enter_or_signal();
    Ok(())
}

/// Blocks until Enter on stdin or SIGINT/SIGTERM, so the lab's destructors
/// run either way.
fn wait_for_enter_or_signal() {
    // SAFETY: signal-mask calls on a zeroed, then filled, sigset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        // SAFETY: signals our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
    let mut sig = 0;
    // SAFETY: waits on the blocked set.
    unsafe { libc::sigwait(&set, &mut sig) };
}
