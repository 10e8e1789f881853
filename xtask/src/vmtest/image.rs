//! ext4 disk images made from a directory (`mke2fs -d`: no loop mount,
//! no root needed for the image itself).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

const MIB: u64 = 1 << 20;

/// Makes `image` hold `dir`'s tree, with `spare` bytes free beyond it.
pub fn ext4(dir: &Path, image: &Path, label: &str, spare: u64) -> Result<()> {
    let content = disk_usage(dir)?;
    // ext4's own metadata (inode tables, journal) takes about a tenth.
    let size = content + content / 10 + spare + 32 * MIB;
    // Sized here, mke2fs takes the file as it is (and says nothing).
    std::fs::File::create(image)
        .and_then(|f| f.set_len(size.next_multiple_of(MIB)))
        .with_context(|| format!("creating {}", image.display()))?;
    crate::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", label, "-d"])
            .arg(dir)
            .arg(image),
    )
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
