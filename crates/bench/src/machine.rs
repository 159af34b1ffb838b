//! What the runner reads of this machine and of its processes, from `/proc`.

use std::time::Duration;

/// A process's figures at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User and system CPU time, in seconds, over all its threads.
    pub cpu_s: f64,
    /// Resident memory now, in bytes.
    pub rss_bytes: u64,
    /// The most resident memory it has had, in bytes.
    pub peak_rss_bytes: u64,
}

/// Reads the CPU time and memory of process `pid`; `None` once it is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15, that is 11 and 12 after the name and state.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Some(Usage {
        cpu_s: ticks as f64 / clock_ticks_per_second() as f64,
        rss_bytes: status_kib(&status, "VmRSS:") * 1024,
        peak_rss_bytes: status_kib(&status, "VmHWM:") * 1024,
    })
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`); 100 on every Linux we know of.
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

/// The share of all CPUs that was busy over `window`, from 0 to 1.
pub fn busy_share(window: Duration) -> Option<f64> {
    let before = cpu_times()?;
    std::thread::sleep(window);
    let after = cpu_times()?;
    let total = after.0.saturating_sub(before.0);
    let idle = after.1.saturating_sub(before.1);
    (total > 0).then(|| 1.0 - idle as f64 / total as f64)
}

/// All CPU time and idle time (idle plus iowait) since boot, in ticks.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    Some((values.iter().sum(), idle))
}

/// Waits up to `limit` for the machine to be idle (under 10 % busy over a quarter second),
/// and says how busy it was when the wait ended.
pub fn wait_until_idle(limit: Duration) -> f64 {
    let started = std::time::Instant::now();
    loop {
        let busy = busy_share(Duration::from_millis(250)).unwrap_or(0.0);
        if busy < 0.10 || started.elapsed() >= limit {
            return busy;
        }
    }
}

/// One line naming the machine: CPU model, CPUs, memory and kernel.
pub fn describe() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, model)| {
            model.trim().to_owned()
        });
    let cpus = std::thread::available_parallelism().map_or(0, |cpus| cpus.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = status_kib(&meminfo, "MemTotal:") as f64 / (1024.0 * 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cpus} CPUs, {memory_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let mut spin = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            spin = spin.wrapping_add(1);
        }
        let usage = usage(std::process::id()).expect("our own /proc entry");
        assert!(spin > 0);
        assert!(usage.cpu_s > 0.0, "{usage:?}");
        assert!(usage.rss_bytes > 1024 * 1024, "{usage:?}");
        assert!(usage.peak_rss_bytes >= usage.rss_bytes, "{usage:?}");
    }

    #[test]
    fn a_missing_process_has_no_usage() {
        assert_eq!(usage(u32::MAX), None);
    }
}
