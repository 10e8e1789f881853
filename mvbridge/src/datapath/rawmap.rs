//! bpf(2) map operations on raw bytes, where aya's typed maps do not
//! serve: migrating maps whose value types this binary no longer (or
//! never) had, and reading a whole array in a few calls (aya reads one
//! element per call).

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::{Error, Result};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The map element part of `union bpf_attr`.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next: u64,
    flags: u64,
}

/// The batch part of `union bpf_attr`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The kernel's "operation not supported" (not in libc: kernel-internal,
/// but bpf(2) hands it out).
const ENOTSUPP: i32 = 524;

pub(crate) fn call<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for `cmd`, and
    // writable (batch commands write back how many they did); the pointers
    // in it point at buffers the caller sized for the map's keys and
    // values and that outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn attr(fd: BorrowedFd<'_>, key: Option<&[u8]>, value: *mut u8) -> ElemAttr {
    ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.map_or(0, |k| k.as_ptr() as u64),
        value_or_next: value as u64,
        flags: 0,
    }
}

/// The key after `key` (the first with `None`); `None` at the end.
pub fn next_key(fd: BorrowedFd<'_>, key: Option<&[u8]>, key_size: u32) -> Result<Option<Vec<u8>>> {
    let mut next = vec![0u8; key_size as usize];
    match call(BPF_MAP_GET_NEXT_KEY, &mut attr(fd, key, next.as_mut_ptr())) {
        Ok(()) => Ok(Some(next)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(Error::io("walking a pinned map", e)),
    }
}

/// False when there is no such entry.
pub fn lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<bool> {
    match call(
        BPF_MAP_LOOKUP_ELEM,
        &mut attr(fd, Some(key), value.as_mut_ptr()),
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::io("reading a pinned map", e)),
    }
}

pub fn update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> Result<()> {
    call(
        BPF_MAP_UPDATE_ELEM,
        &mut attr(fd, Some(key), value.as_ptr() as *mut u8),
    )
    .map_err(|e| Error::io("writing a map entry", e))
}

/// Every value of an array map of `len` slots of `value_size` bytes, in
/// batches (Linux 5.6+), falling back to one call per slot where the
/// kernel has no batch operations for arrays.
pub fn read_array(fd: BorrowedFd<'_>, len: u32, value_size: u32) -> Result<Vec<u8>> {
    let size = value_size as usize;
    let mut values = vec![0u8; len as usize * size];
    let mut keys = vec![0u32; len as usize];
    let mut done = 0usize;
    let mut cursor = 0u32;
    let mut first = true;
    while done < len as usize {
        let mut batch = BatchAttr {
            in_batch: if first {
                0
            } else {
                &cursor as *const u32 as u64
            },
            out_batch: &mut cursor as *mut u32 as u64,
            keys: keys[done..].as_mut_ptr() as u64,
            values: values[done * size..].as_mut_ptr() as u64,
            count: (len as usize - done) as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        first = false;
        match call(BPF_MAP_LOOKUP_BATCH, &mut batch) {
            Ok(()) => done += batch.count as usize,
            // The last batch ends the array.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(ENOTSUPP)) => {
                return read_array_one_by_one(fd, len, value_size);
            }
            Err(e) => return Err(Error::io("reading a pinned array", e)),
        }
    }
    Ok(values)
}

fn read_array_one_by_one(fd: BorrowedFd<'_>, len: u32, value_size: u32) -> Result<Vec<u8>> {
    let size = value_size as usize;
    let mut values = vec![0u8; len as usize * size];
    for i in 0..len {
        let at = i as usize * size;
        lookup(fd, &i.to_ne_bytes(), &mut values[at..at + size])?;
    }
    Ok(values)
}
