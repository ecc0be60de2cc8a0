//! How sizes and durations read in everything memtrace prints for people.

/// Bytes in binary units, exact below 1 KiB: `512 B`, `204.0 KiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up a unit when the value would print as 1024.0 or more at one decimal, so 1 MiB − 1 B
    // reads "1.0 MiB", not "1024.0 KiB".
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A change in bytes with its sign: `+4.0 KiB`, `−1.5 MiB`.
pub fn signed_bytes(bytes: i128) -> String {
    let magnitude = human_bytes(u64::try_from(bytes.unsigned_abs()).unwrap_or(u64::MAX));
    if bytes < 0 {
        format!("−{magnitude}")
    } else {
        format!("+{magnitude}")
    }
}

/// Nanoseconds as milliseconds.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Nanoseconds as seconds.
pub fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human_bytes(1_048_064), "1023.5 KiB");
        assert_eq!(human_bytes(208_896), "204.0 KiB");
        assert_eq!(human_bytes(512 << 20), "512.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(signed_bytes(-4096), "−4.0 KiB");
        assert_eq!(signed_bytes(0), "+0 B");
    }
}
