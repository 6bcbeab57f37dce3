//! The model: a pure function from a plan (with its `simulate` block) to a timeline of
//! what a real backend would observe. Nothing here runs code or invents output: output
//! is reported as volume only, and every egress attempt gets the decision the proxy
//! would make, from the same decision code.

use enclave_core::{
    BackendEvent, Behaviour, DecisionContext, EgressPhase, ExitObservation, Observation, Plan, Resolution,
    check_binding_scope, decide,
};

/// Default modelled workload duration when the spec gives none.
pub const DEFAULT_DURATION_MS: u64 = 1_000;

/// How many chunks modelled output is spread over (so a log cap bites mid-run).
const OUTPUT_CHUNKS: u64 = 10;

/// Something that happens at a modelled instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Report a fact.
    Emit(BackendEvent),
    /// The run ends with this observation.
    End(Observation),
}

/// The modelled timeline: `(offset from start in ms, action)`, sorted by offset (stable:
/// actions at one instant keep their order). Always ends with exactly one `End`.
pub fn timeline(plan: &Plan) -> Vec<(u64, Action)> {
    let model = plan.simulate.clone().unwrap_or_default();
    let mut out: Vec<(u64, Action)> = Vec::new();
    let emit = |at: u64, event: BackendEvent| (at, Action::Emit(event));

    if let Some(clone) = plan.clone_phase() {
        out.push(emit(0, BackendEvent::CloneStarted));
        let ctx = DecisionContext::new(plan, EgressPhase::Clone);
        let decision = decide(&ctx, &clone.host.to_string(), clone.port, Resolution::NotModelled);
        let ok = decision.is_allow();
        out.push(emit(
            0,
            BackendEvent::Egress {
                phase: EgressPhase::Clone,
                host: clone.host.to_string(),
                port: clone.port,
                decision,
            },
        ));
        out.push(emit(
            0,
            BackendEvent::CloneFinished {
                ok,
                detail: if ok {
                    "clone modelled, not performed".into()
                } else {
                    "clone denied by egress policy".into()
                },
            },
        ));
        // The clone phase's reach ends with the phase, whether the clone worked or not
        // (as on Docker, where the clone rule is revoked after every clone).
        out.push(emit(0, BackendEvent::CloneReachRevoked));
        if !ok {
            out.push((0, Action::End(Observation::from_exit(ExitObservation::Exited { code: 128 }))));
            return out;
        }
    }
    out.push(emit(0, BackendEvent::WorkloadStarted));

    let duration = model.duration_ms.unwrap_or(DEFAULT_DURATION_MS);
    connections(plan, &model, duration, &mut out);
    output(&model, duration, &mut out);

    // Resource peaks are modelled at the middle of the run.
    let midpoint = duration / 2;
    let q = &plan.quotas;
    if let Some(processes) = model.processes
        && u64::from(processes) > u64::from(q.pids)
    {
        out.push(emit(midpoint, BackendEvent::PidsLimitHit));
    }
    if let Some(written) = model.disk_written_bytes
        && written > q.disk_bytes
    {
        out.push(emit(midpoint, BackendEvent::DiskFull));
    }
    if let Some(peak) = model.peak_memory_bytes
        && peak > q.memory_bytes
    {
        let oom = Observation { oom_killed: true, ..Observation::from_exit(ExitObservation::Signaled { signal: 9 }) };
        out.push((midpoint, Action::End(oom)));
    }
    // The modelled user's cancel is a fact this backend reports, like any other; it
    // goes before an ending at the same instant.
    if let Some(after) = model.cancel_after_ms {
        out.push(emit(after, BackendEvent::CancelRequested));
    }
    if let Some(lost) = model.infra_lost_after_ms {
        let detail = format!("sandbox lost after {} (modelled)", enclave_spec::DurationMs(lost));
        out.push((lost, Action::End(Observation::from_exit(ExitObservation::Lost { detail }))));
    }
    out.push((duration, Action::End(Observation::from_exit(ExitObservation::Exited { code: model.exit_code }))));

    out.sort_by_key(|(at, _)| *at);
    if let Some(first_end) = out.iter().position(|(_, a)| matches!(a, Action::End(_))) {
        out.truncate(first_end + 1);
    }
    out
}

fn connections(plan: &Plan, model: &Behaviour, duration: u64, out: &mut Vec<(u64, Action)>) {
    let count = model.egress.len() as u64;
    let ctx = DecisionContext::new(plan, EgressPhase::Run);
    for (index, attempt) in model.egress.iter().enumerate() {
        let at = attempt.at_ms.unwrap_or_else(|| duration * (index as u64 + 1) / (count + 1));
        let resolution = if attempt.resolves_to.is_empty() {
            Resolution::NotModelled
        } else {
            Resolution::Resolved(&attempt.resolves_to)
        };
        let decision = decide(&ctx, &attempt.host, attempt.port, resolution);
        let binding_rule = match &decision {
            enclave_core::Decision::Allow { rule } => rule.binding().map(str::to_owned),
            enclave_core::Decision::Deny { .. } => None,
        };
        out.push((
            at,
            Action::Emit(BackendEvent::Egress {
                phase: EgressPhase::Run,
                host: attempt.host.clone(),
                port: attempt.port,
                decision,
            }),
        ));
        let Some(name) = binding_rule else { continue };
        let Some(binding) = plan.bindings.iter().find(|b| b.name == name) else {
            continue;
        };
        let method = attempt.method.map_or_else(|| "GET".to_owned(), |m| m.to_string());
        let path = attempt.path.clone().unwrap_or_else(|| "/".to_owned());
        let scope = check_binding_scope(binding, &method, &path);
        out.push((
            at,
            Action::Emit(BackendEvent::BindingUsed {
                binding: binding.name.clone(),
                host: binding.host.to_string(),
                method,
                path: path.split(['?', '#']).next().unwrap_or("/").to_owned(),
                allowed: scope.is_ok(),
                status: None,
                reason: scope.err().map(|e| e.to_string()),
            }),
        ));
    }
}

fn output(model: &Behaviour, duration: u64, out: &mut Vec<(u64, Action)>) {
    let Some(logs) = model.logs else { return };
    let bytes = logs.bytes;
    if bytes == 0 && logs.lines == 0 {
        return;
    }
    let chunks = OUTPUT_CHUNKS;
    for k in 1..=chunks {
        let share = |total: u64| total * k / chunks - total * (k - 1) / chunks;
        out.push((
            duration * k / chunks,
            Action::Emit(BackendEvent::OutputVolume { lines: share(logs.lines), bytes: share(bytes) }),
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use enclave_core::{Behaviour, Policy};

    use super::*;

    fn plan_with(model: Behaviour) -> Plan {
        let yaml = "apiVersion: enclave.dev/v1\nkind: Session\nmetadata: { name: t }\nspec: { command: [\"true\"] }\n";
        let parsed = enclave_spec::parse("t.yaml", yaml.as_bytes()).unwrap();
        let mut plan = enclave_core::plan(&parsed.spec, &Policy::default()).unwrap();
        plan.simulate = Some(model);
        plan
    }

    #[test]
    fn a_modelled_cancel_is_reported_by_the_model_before_the_run_ends() {
        let plan =
            plan_with(Behaviour { duration_ms: Some(5_000), cancel_after_ms: Some(2_000), ..Behaviour::default() });
        let line = timeline(&plan);
        let cancel = line.iter().position(|(_, a)| *a == Action::Emit(BackendEvent::CancelRequested)).unwrap();
        assert_eq!(line[cancel].0, 2_000);
        assert!(matches!(line.last(), Some((5_000, Action::End(_)))), "the run goes on until it is killed");
        // At the instant the run would end anyway, the cancel still comes first.
        let plan =
            plan_with(Behaviour { duration_ms: Some(2_000), cancel_after_ms: Some(2_000), ..Behaviour::default() });
        let line = timeline(&plan);
        let at_end: Vec<&Action> = line.iter().filter(|(at, _)| *at == 2_000).map(|(_, a)| a).collect();
        assert_eq!(at_end.first(), Some(&&Action::Emit(BackendEvent::CancelRequested)));
    }

    #[test]
    fn a_cancel_after_the_end_is_never_reported() {
        let plan =
            plan_with(Behaviour { duration_ms: Some(1_000), cancel_after_ms: Some(3_000), ..Behaviour::default() });
        assert!(!timeline(&plan).iter().any(|(_, a)| *a == Action::Emit(BackendEvent::CancelRequested)));
    }
}
