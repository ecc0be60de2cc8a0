//! Disk images for the guests: a sparse ext4 image made by `mkfs.ext4 -d` from a directory
//! (no mount, no root), bare or behind a DOS partition table so the kernel finds its root by
//! PARTUUID.

use std::{fs, io::Write as _, path::Path, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::tasks::{status, which};

/// How an image is laid out.
#[derive(Clone, Copy)]
pub enum Layout {
    /// The filesystem fills the image.
    Bare,
    /// A DOS partition table with one partition that holds the filesystem, so the kernel can
    /// find it as `root=PARTUUID=…`: disk names are not stable (6.12 scans NVMe namespaces
    /// asynchronously, and nvme0n1 was sometimes the job disk).
    Partitioned,
}

/// The root image's partition: its DOS disk signature ("memt") and partition number.
pub const ROOT_PARTUUID: &str = "6d656d74-01";
const DISK_SIGNATURE: u32 = 0x6d65_6d74;
/// Where the partition starts, as partitioning tools align it.
const PARTITION_START: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// A fresh ext4 image of `size` bytes (sparse) at `image` holding the tree at `content`.
/// Made aside and renamed into place: a guest still running on the old image keeps it.
pub fn make_ext4(
    content: &Path,
    image: &Path,
    size: u64,
    label: &str,
    layout: Layout,
) -> anyhow::Result<()> {
    let new = image.with_extension(format!("new-{}", std::process::id()));
    let mut file = fs::File::create(&new)
        .and_then(|file| file.set_len(size).map(|()| file))
        .with_context(|| format!("cannot create {}", new.display()))?;
    let mut mkfs = Command::new(mkfs_ext4()?);
    mkfs.args(["-q", "-F", "-L", label, "-d"]).arg(content);
    if let Layout::Partitioned = layout {
        file.write_all(&dos_partition_table(size))
            .with_context(|| format!("cannot write {}", new.display()))?;
        // The filesystem starts past the table and, given an offset, mkfs needs its size.
        mkfs.arg("-E").arg(format!("offset={PARTITION_START}"));
        mkfs.arg(&new)
            .arg(format!("{}k", (size - PARTITION_START) >> 10));
    } else {
        mkfs.arg(&new);
    }
    drop(file);
    status(&mut mkfs)?;
    fs::rename(&new, image).with_context(|| format!("cannot replace {}", image.display()))
}

/// A master boot record with one Linux partition from PARTITION_START to the end of a disk of
/// `size` bytes, on disk signature DISK_SIGNATURE (the PARTUUID's first half).
fn dos_partition_table(size: u64) -> [u8; 512] {
    let first = PARTITION_START / SECTOR;
    let sectors = u32::try_from(size / SECTOR - first).unwrap_or(u32::MAX);
    let mut mbr = [0u8; 512];
    mbr[0x1b8..0x1bc].copy_from_slice(&DISK_SIGNATURE.to_le_bytes());
    let entry = &mut mbr[0x1be..0x1ce];
    // Status 0 (not active), CHS fields unused (Linux reads the LBA fields), type 0x83.
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&(first as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}

/// mkfs.ext4, which lives in sbin (not on a normal user's PATH).
pub fn mkfs_ext4() -> anyhow::Result<PathBuf> {
    which("mkfs.ext4")
        .or_else(|| {
            ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
                .map(PathBuf::from)
                .into_iter()
                .find(|p| p.is_file())
        })
        .context("mkfs.ext4 is not installed (e2fsprogs)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_table_points_past_the_first_mib_to_the_end() {
        let mbr = dos_partition_table(10 << 20);
        assert_eq!(&mbr[510..], [0x55, 0xaa]);
        assert_eq!(mbr[0x1be + 4], 0x83);
        assert_eq!(mbr[0x1be + 8..0x1be + 12], 2048u32.to_le_bytes());
        assert_eq!(mbr[0x1be + 12..0x1be + 16], (18432u32).to_le_bytes());
        let signature = u32::from_le_bytes([mbr[0x1b8], mbr[0x1b9], mbr[0x1ba], mbr[0x1bb]]);
        assert_eq!(format!("{signature:08x}-01"), ROOT_PARTUUID);
    }
}
