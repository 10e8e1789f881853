//! Getting at the errno behind a library error, to explain it.

use std::error::Error;

/// The first OS error code found along the error's source chain (an I/O
/// error's, or the code of a netlink error message).
pub fn of(err: &(dyn Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        if let Some(rtnetlink::Error::NetlinkError(msg)) = e.downcast_ref::<rtnetlink::Error>() {
            return Some(-msg.raw_code());
        }
        cur = e.source();
    }
    None
}

/// The error and its causes on one line, for logs and status fields.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_errno_inside_aya_errors() {
        let e = aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: std::io::Error::from_raw_os_error(libc::E2BIG),
        });
        assert_eq!(of(&e), Some(libc::E2BIG));
        assert!(chain(&e).contains("Argument list too long"));
        let boxed = crate::error::Error::bpf("adding 203.0.113.5", e);
        assert_eq!(boxed.errno(), Some(libc::E2BIG));
        assert!(boxed.to_string().contains("the table is full"));
    }
}
