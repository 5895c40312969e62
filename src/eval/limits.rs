//! The resource limits of the evaluation's children. Each child (the evaluation worker, the
//! chat-template renderer) sets them on itself with `setrlimit` as the first thing it does,
//! from its command line: no shell, no unsafe code. A limit is never asked above the hard
//! limit the validator inherited (a container, systemd's `LimitAS=`, `prlimit`): it is lowered
//! to it, and then a child that fails under it is the machine's fault, never the model's.

use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The limits a child asks for (`None`: no limit of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildLimits {
    /// `RLIMIT_AS`, bytes: a file built to exhaust memory fails in the child.
    pub address_space_bytes: Option<u64>,
    /// `RLIMIT_CPU`, seconds: a backstop behind the wall-clock timeout.
    pub cpu_seconds: Option<u64>,
}

/// The command-line flag carrying the address-space limit to a child.
pub const ADDRESS_SPACE_FLAG: &str = "--address-space-bytes";
/// The command-line flag carrying the CPU-time limit to a child.
pub const CPU_SECONDS_FLAG: &str = "--cpu-seconds";

fn hard_limit(resource: Resource) -> Option<u64> {
    getrlimit(resource).maximum
}

impl ChildLimits {
    /// These limits, each lowered to the hard limit this process has (a child inherits it and
    /// can ask no more).
    pub fn under_inherited(&self) -> Self {
        let lowered = |wanted: Option<u64>, resource| match (wanted, hard_limit(resource)) {
            (Some(wanted), Some(hard)) => Some(wanted.min(hard)),
            (wanted, _) => wanted,
        };
        Self {
            address_space_bytes: lowered(self.address_space_bytes, Resource::As),
            cpu_seconds: lowered(self.cpu_seconds, Resource::Cpu),
        }
    }

    /// Whether the hard limits this process inherited are below these (a child would run
    /// under less than the evaluation asks for).
    pub fn are_lowered_here(&self) -> bool {
        let lower = |wanted: Option<u64>, resource| {
            wanted.is_some_and(|wanted| hard_limit(resource).is_some_and(|hard| hard < wanted))
        };
        lower(self.address_space_bytes, Resource::As) || lower(self.cpu_seconds, Resource::Cpu)
    }

    /// The child's command-line arguments for these limits.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(bytes) = self.address_space_bytes {
            args.extend([ADDRESS_SPACE_FLAG.to_owned(), bytes.to_string()]);
        }
        if let Some(seconds) = self.cpu_seconds {
            args.extend([CPU_SECONDS_FLAG.to_owned(), seconds.to_string()]);
        }
        args
    }

    /// Sets these limits on this process, soft and hard, never above the hard limits it
    /// inherited. Returns whether any had to be lowered.
    pub fn apply(&self) -> io::Result<bool> {
        let lowered = self.are_lowered_here();
        let wanted = self.under_inherited();
        if let Some(bytes) = wanted.address_space_bytes {
            set(Resource::As, bytes)?;
        }
        if let Some(seconds) = wanted.cpu_seconds {
            set(Resource::Cpu, seconds.max(1))?;
        }
        Ok(lowered)
    }
}

fn set(resource: Resource, value: u64) -> io::Result<()> {
    setrlimit(
        resource,
        Rlimit {
            current: Some(value),
            maximum: Some(value),
        },
    )
    .map_err(|errno| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("setting the {resource:?} limit to {value}: {errno}"),
        )
    })
}

/// The open-files limit a validator needs: the journal, the chain and hub connections, and
/// the pipes of every evaluation child at once.
pub const OPEN_FILES_MIN: u64 = 256;

/// Raises this process's soft open-files limit to its hard limit (children inherit it), and
/// returns the limit now in force.
pub fn raise_open_files() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(hard)) = (limit.current, limit.maximum)
        && current < hard
    {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return hard;
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// The limits this process runs under, as the start-up log states them.
pub fn describe_inherited() -> String {
    let show = |resource: Resource, unit: &str| {
        let limit = getrlimit(resource);
        let figure = |value: Option<u64>| {
            value.map_or_else(|| "unlimited".to_owned(), |v| format!("{v}{unit}"))
        };
        format!("{} (hard {})", figure(limit.current), figure(limit.maximum))
    };
    format!(
        "address space {}, CPU time {}, open files {}",
        show(Resource::As, " bytes"),
        show(Resource::Cpu, " s"),
        show(Resource::Nofile, "")
    )
}

/// Reads a child's limits from its command-line arguments (what [`ChildLimits::args`] wrote).
pub fn from_args(args: &[String]) -> Result<ChildLimits, String> {
    let mut limits = ChildLimits::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            ADDRESS_SPACE_FLAG => limits.address_space_bytes = Some(value),
            CPU_SECONDS_FLAG => limits.cpu_seconds = Some(value),
            other => return Err(format!("unknown limit {other}")),
        }
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_travel_as_arguments_and_are_never_asked_above_the_hard_limit() {
        let limits = ChildLimits {
            address_space_bytes: Some(1 << 30),
            cpu_seconds: Some(60),
        };
        assert_eq!(from_args(&limits.args()).unwrap(), limits);
        assert!(from_args(&["--bogus".into(), "1".into()]).is_err());
        assert!(from_args(&[ADDRESS_SPACE_FLAG.into()]).is_err());
        let huge = ChildLimits {
            address_space_bytes: Some(u64::MAX - 1),
            cpu_seconds: None,
        };
        let under = huge.under_inherited();
        if let Some(hard) = getrlimit(Resource::As).maximum {
            assert_eq!(under.address_space_bytes, Some(hard.min(u64::MAX - 1)));
        }
    }
}
