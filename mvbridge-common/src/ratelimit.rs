//! A token bucket, for the ARP and neighbour discovery a VM may send to
//! local endpoints: enough for any stack (a few a second), not enough to
//! flood the host's neighbour code.

/// One VM's bucket, in the per-CPU rate map (each CPU refills its own,
/// so the limit holds per CPU without atomics).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens left, in thousandths of a frame.
    pub milli_tokens: u64,
    /// When the bucket was last refilled.
    pub last_ns: u64,
}

/// Frames per second a VM may send as ARP or ND to local endpoints.
pub const RATE_PER_SEC: u64 = 100;
/// And in one burst.
pub const BURST: u64 = 200;

const MILLI: u64 = 1000;

/// Refills `b` for the time elapsed until `now_ns` and takes a token.
/// False: over the limit.
#[inline(always)]
pub fn take(b: &mut Bucket, now_ns: u64) -> bool {
    let elapsed = now_ns.saturating_sub(b.last_ns);
    // Refill in whole milli-tokens; cap the span so the product cannot
    // overflow (a bucket idle for 10 s is full anyway).
    let span = if elapsed > 10_000_000_000 {
        10_000_000_000
    } else {
        elapsed
    };
    let refill = span * RATE_PER_SEC * MILLI / 1_000_000_000;
    let full = BURST * MILLI;
    let mut tokens = b.milli_tokens + refill;
    if tokens > full {
        tokens = full;
    }
    if b.last_ns == 0 {
        tokens = full;
    }
    b.last_ns = now_ns;
    if tokens < MILLI {
        b.milli_tokens = tokens;
        return false;
    }
    b.milli_tokens = tokens - MILLI;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Bucket::default();
        let t0 = 5_000_000_000;
        let taken = (0..1000).filter(|_| take(&mut b, t0)).count() as u64;
        assert_eq!(taken, BURST, "a fresh bucket allows one burst");
        // One second later: RATE_PER_SEC more.
        let taken = (0..1000)
            .filter(|_| take(&mut b, t0 + 1_000_000_000))
            .count() as u64;
        assert_eq!(taken, RATE_PER_SEC);
        // A quiet VM is never limited.
        let mut quiet = Bucket::default();
        for i in 0..100u64 {
            assert!(
                take(&mut quiet, t0 + i * 100_000_000),
                "10 a second is fine"
            );
        }
    }

    #[test]
    fn time_going_backwards_or_far_forward_is_safe() {
        let mut b = Bucket::default();
        assert!(take(&mut b, 1_000));
        assert!(take(&mut b, 10)); // earlier: no refill, no underflow
        assert!(take(&mut b, u64::MAX)); // far later: full, no overflow
    }
}
