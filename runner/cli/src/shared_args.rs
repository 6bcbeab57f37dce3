//! Argument groups that more than one command takes: the planning policy (`plan`,
//! `run`) and the text-or-JSON output switch (`validate`, `audit verify`). Arguments of
//! one command live in that command's module.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct IsolationArg {
    /// Kernel isolation. `gvisor` is the default and the only secure choice;
    /// `host-kernel` must be asked for explicitly, is printed as a warning and is
    /// recorded in the plan, the result and the audit.
    #[arg(long, value_enum, default_value_t = IsolationChoice::Gvisor)]
    isolation: IsolationChoice,
    /// A private or other special range (CIDR; never metadata, loopback or link-local)
    /// that the spec's `cidr` rules may name, e.g. an internal API on 10.20.0.0/16. A
    /// rule naming a special range not listed here is refused when the spec is planned.
    /// Repeatable.
    #[arg(long = "allow-network", value_name = "CIDR", value_delimiter = ',')]
    allow_networks: Vec<ipnet::IpNet>,
    /// UNSAFE, for tests and local development only: a loopback range on this host
    /// (inside 127.0.0.0/8 or ::1) that the session may reach where a `cidr` rule names
    /// it, and that the clone may reach. Printed as a warning and recorded in the plan.
    /// Repeatable.
    #[arg(long = "unsafe-host-loopback", value_name = "CIDR", value_delimiter = ',')]
    unsafe_host_loopback: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IsolationChoice {
    /// gVisor (runsc) user-space kernel.
    Gvisor,
    /// The host kernel (weaker; explicit opt-in).
    HostKernel,
}

impl IsolationArg {
    /// The policy a spec is planned against: the default, widened only by these flags.
    pub(crate) fn policy(&self) -> enclave_core::Policy {
        let mut policy = enclave_core::Policy::default();
        policy.allow_networks.clone_from(&self.allow_networks);
        policy.host_loopback.clone_from(&self.unsafe_host_loopback);
        if self.isolation == IsolationChoice::HostKernel {
            policy.isolation = enclave_core::Isolation::HostKernel;
            policy.permit_weaker_isolation = true;
        }
        policy
    }
}
