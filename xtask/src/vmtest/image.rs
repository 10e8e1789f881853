//! ext4 disk images made from a directory (`mke2fs -d`: no loop mount,
//! no root needed for the image itself).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

const MIB: u64 = 1 << 20;

/// The root disk's MBR signature. The kernel finds its root file system
/// by it (`root=PARTUUID=`): NVMe disks probe in parallel, so which one
/// becomes nvme0n1 changes from boot to boot.
const DISK_SIGNATURE: u32 = 0x6d76_6272;
/// `root=PARTUUID=` for [`root_disk`]'s file system: signature-partition.
pub const ROOT_PARTUUID: &str = "6d766272-01";
/// Where the partition starts: the usual 1 MiB alignment.
const PARTITION_START: u64 = MIB;

/// Makes `image` a bare ext4 file system holding `dir`'s tree, with
/// `spare` bytes free beyond it.
pub fn ext4(dir: &Path, image: &Path, label: &str, spare: u64) -> Result<()> {
    let size = fs_size(dir, spare)?;
    create(image, size)?;
    mke2fs(dir, image, label, 0, size)
}

/// Makes `image` a disk with one partition, [`ROOT_PARTUUID`], holding
/// `dir`'s tree as ext4, with `spare` bytes free beyond it.
pub fn root_disk(dir: &Path, image: &Path, label: &str, spare: u64) -> Result<()> {
    let size = fs_size(dir, spare)?;
    create(image, PARTITION_START + size)?;
    mke2fs(dir, image, label, PARTITION_START, size)?;
    File::options()
        .write(true)
        .open(image)
        .and_then(|f| f.write_all_at(&mbr(DISK_SIGNATURE, PARTITION_START, size), 0))
        .with_context(|| format!("writing the partition table of {}", image.display()))
}

/// What `dir` needs as a file system, in whole MiB.
fn fs_size(dir: &Path, spare: u64) -> Result<u64> {
    let content = disk_usage(dir)?;
    // ext4's own metadata (inode tables, journal) takes about a tenth.
    Ok((content + content / 10 + spare + 32 * MIB).next_multiple_of(MIB))
}

/// A sparse file of `size` bytes (mke2fs then says nothing about
/// creating it).
fn create(image: &Path, size: u64) -> Result<()> {
    File::create(image)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("creating {}", image.display()))
}

/// Writes the file system `offset` bytes into `image` (after a partition
/// table, say), `size` bytes long.
fn mke2fs(dir: &Path, image: &Path, label: &str, offset: u64, size: u64) -> Result<()> {
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", label]);
    if offset > 0 {
        cmd.arg("-E").arg(format!("offset={offset}"));
    }
    crate::run(
        cmd.arg("-d")
            .arg(dir)
            .arg(image)
            .arg(format!("{}k", size / 1024)),
    )
}

/// A master boot record with one Linux partition of `len` bytes at
/// `start` (both in whole sectors).
fn mbr(signature: u32, start: u64, len: u64) -> [u8; 512] {
    let sector = |bytes: u64| u32::try_from(bytes / 512).expect("an MBR disk under 2 TiB");
    let mut mbr = [0u8; 512];
    mbr[440..444].copy_from_slice(&signature.to_le_bytes());
    let entry = &mut mbr[446..462];
    // Not bootable; CHS addresses unused (all LBA), type 0x83 (Linux).
    entry[..8].copy_from_slice(&[0x00, 0xfe, 0xff, 0xff, 0x83, 0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&sector(start).to_le_bytes());
    entry[12..16].copy_from_slice(&sector(len).to_le_bytes());
    mbr[510..].copy_from_slice(&[0x55, 0xaa]);
    mbr
}

/// Bytes `dir`'s files take in 4 KiB blocks (symlinks not followed).
fn disk_usage(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            }
            total += meta.len().div_ceil(4096).max(1) * 4096;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partuuid_is_the_signature_and_partition_one() {
        assert_eq!(ROOT_PARTUUID, format!("{DISK_SIGNATURE:08x}-01"));
    }

    #[test]
    fn one_linux_partition_in_the_boot_record() {
        let mbr = mbr(0x6d76_6272, MIB, 600 * MIB);
        assert_eq!(mbr[440..444], [0x72, 0x62, 0x76, 0x6d]);
        assert_eq!(mbr[446], 0);
        assert_eq!(mbr[450], 0x83);
        assert_eq!(u32::from_le_bytes(mbr[454..458].try_into().unwrap()), 2048);
        assert_eq!(
            u32::from_le_bytes(mbr[458..462].try_into().unwrap()),
            600 * 2048
        );
        assert!(mbr[462..510].iter().all(|&b| b == 0));
        assert_eq!(mbr[510..], [0x55, 0xaa]);
    }

    #[test]
    fn usage_counts_whole_blocks_in_subdirectories() {
        let dir = std::env::temp_dir().join(format!("xtask-image-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), [0u8; 5000]).unwrap();
        std::fs::write(dir.join("sub/b"), "x").unwrap();
        // a: 2 blocks, sub: 1, sub/b: 1.
        assert_eq!(disk_usage(&dir).unwrap(), 4 * 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
