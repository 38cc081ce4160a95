//! The process that owns a leftover (a `running` backup or restore row, a private temporary
//! directory), named so that a later process can tell whether it has ended: the host name, the
//! pid and the pid's start time (clock ticks after boot, from `/proc`), since pids are reused.

use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    pub start: u64,
}

impl Owner {
    /// This process; `None` where `/proc` cannot tell (then nothing it leaves is settled early).
    pub fn this() -> Option<&'static Owner> {
        static THIS: OnceLock<Option<Owner>> = OnceLock::new();
        THIS.get_or_init(|| {
            let pid = std::process::id();
            Some(Owner {
                host: hostname()?,
                pid,
                start: start_time(pid)?,
            })
        })
        .as_ref()
    }

    /// `host:pid:start`, as the catalog records it.
    pub fn tag(&self) -> String {
        format!("{}:{}:{}", self.host, self.pid, self.start)
    }

    pub fn parse_tag(tag: &str) -> Option<Owner> {
        let mut parts = tag.split(':');
        let owner = Owner {
            host: parts.next()?.to_string(),
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(owner)
    }

    /// Whether this process has provably ended: `Some(true)` when it ran on this host and no
    /// process with its pid and start time exists now (the pid is free, or reused by a later
    /// process); `None` when it ran on another host (a catalog shared by several hosts), which
    /// cannot be told from here.
    pub fn ended(&self) -> Option<bool> {
        let here = Owner::this()?;
        if self.host != here.host {
            return None;
        }
        Some(start_time(self.pid) != Some(self.start))
    }
}

/// This process's tag, for a catalog row it may leave behind.
pub fn this_tag() -> Option<String> {
    Owner::this().map(Owner::tag)
}

/// Whether the process a row was tagged with has provably ended (`None`: no tag, or another
/// host).
pub fn tag_ended(tag: Option<&str>) -> Option<bool> {
    Owner::parse_tag(tag?)?.ended()
}

fn hostname() -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let host = host.trim();
    (!host.is_empty()).then(|| host.to_string())
}

/// A process's start time (clock ticks after boot): with the pid, it names one process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold anything; the fields after its ')' are plain.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // Field 22 overall; `rest` starts at field 3.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_made_up_ones_ended_or_cannot_be_told() {
        let me = this_tag().expect("/proc is mounted");
        assert_eq!(tag_ended(Some(&me)), Some(false));
        let here = Owner::this().unwrap();
        // The same pid with another start time: a later process that reused it.
        let restarted = Owner {
            start: here.start + 1,
            ..here.clone()
        };
        assert_eq!(restarted.ended(), Some(true));
        assert_eq!(tag_ended(Some(&restarted.tag())), Some(true));
        assert_eq!(tag_ended(Some("elsewhere:1:1")), None);
        assert_eq!(tag_ended(None), None);
        for bad in ["", "h", "h:1", "h:x:1", "h:1:x", "h:1:2:3"] {
            assert_eq!(Owner::parse_tag(bad), None, "{bad:?}");
        }
        assert_eq!(Owner::parse_tag(&me).as_ref(), Some(here));
    }
}
