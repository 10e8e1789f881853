//! Read access to a frame, independent of where its bytes live.

/// A frame the decision code can read from.
///
/// In the programs this is backed by `bpf_skb_load_bytes`, which copies into
/// the stack and therefore needs no verifier-visible pointer arithmetic; on the
/// host it is a byte slice.
pub trait Frame {
    /// Length of the whole frame in bytes.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `N` bytes at `offset`, or `None` when the frame is shorter.
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// `read` at an offset computed from the frame's own contents (behind
    /// extension headers, among options). The programs copy these through
    /// a helper: the verifier cannot follow a packet pointer moved by a
    /// value it only knows a range of.
    fn read_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.read(offset)
    }
}

impl Frame for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let bytes = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}
