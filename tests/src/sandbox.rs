//! Making the kernel refuse things, for tests of how mvbridge copes: a
//! seccomp filter, installed between fork and exec, under which bpf(2)
//! fails with a chosen errno (for every command, or for one).

/// A `pre_exec` hook: bpf(`cmd`, ...) fails with `errno` (every command
/// when `cmd` is `None`).
pub fn refuse_bpf(
    cmd: Option<u32>,
    errno: i32,
) -> impl FnMut() -> std::io::Result<()> + Send + Sync {
    const ALLOW: u32 = 0x7fff_0000;
    const ERRNO: u32 = 0x0005_0000;
    let f = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let refuse = f(0x06, 0, 0, ERRNO | errno as u32);
    let allow = f(0x06, 0, 0, ALLOW);
    let load_nr = f(0x20, 0, 0, 0); // A = seccomp_data.nr
    // Built here, before the fork: the hook itself must not allocate.
    let filter: Vec<libc::sock_filter> = match cmd {
        None => vec![load_nr, f(0x15, 0, 1, libc::SYS_bpf as u32), refuse, allow],
        Some(cmd) => vec![
            load_nr,
            f(0x15, 0, 3, libc::SYS_bpf as u32),
            f(0x20, 0, 0, 16), // A = args[0], low word: the command
            f(0x15, 0, 1, cmd),
            refuse,
            allow,
        ],
    };
    move || {
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prctl with a filter that outlives the call; nothing here
        // allocates (async-signal-safe).
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const _,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
