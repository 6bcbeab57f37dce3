//! The model: a pure function from a plan (with its `simulate` block) to a timeline of
//! what a real backend would observe. Nothing here runs code or invents output: output
//! is reported as volume only, and every egress attempt gets the decision the proxy
//! would make, from the same decision code.

use enclave_core::{
    BackendEvent, DecisionContext, EgressPhase, ExitObservation, Observation, Plan, Resolution, check_binding_scope,
    decide,
};
use enclave_spec::SimulateSpec;

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
            BackendEvent::Egress { phase: EgressPhase::Clone, host: clone.host.to_string(), port: clone.port, decision },
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

    let duration = model.duration.as_ref().map_or(DEFAULT_DURATION_MS, |d| d.0);
    connections(plan, &model, duration, &mut out);
    output(&model, duration, &mut out);

    // Resource peaks are modelled at the middle of the run.
    let midpoint = duration / 2;
    let q = &plan.quotas;
    if let Some(processes) = &model.processes
        && u64::from(processes.value) > u64::from(q.pids)
    {
        out.push(emit(midpoint, BackendEvent::PidsLimitHit));
    }
    if let Some(written) = &model.disk_written
        && written.0 > q.disk_bytes
    {
        out.push(emit(midpoint, BackendEvent::DiskFull));
    }
    if let Some(peak) = &model.peak_memory
        && peak.0 > q.memory_bytes
    {
        let oom = Observation { oom_killed: true, ..Observation::from_exit(ExitObservation::Signaled { signal: 9 }) };
        out.push((midpoint, Action::End(oom)));
    }
    if let Some(lost) = &model.infra_lost_after {
        let detail = format!("sandbox lost after {} (modelled)", lost.value);
        out.push((lost.0, Action::End(Observation::from_exit(ExitObservation::Lost { detail }))));
    }
    out.push((duration, Action::End(Observation::from_exit(ExitObservation::Exited { code: model.exit_code }))));

    out.sort_by_key(|(at, _)| *at);
    if let Some(first_end) = out.iter().position(|(_, a)| matches!(a, Action::End(_))) {
        out.truncate(first_end + 1);
    }
    out
}

fn connections(plan: &Plan, model: &SimulateSpec, duration: u64, out: &mut Vec<(u64, Action)>) {
    let count = model.egress.len() as u64;
    let ctx = DecisionContext::new(plan, EgressPhase::Run);
    for (index, attempt) in model.egress.iter().enumerate() {
        let at = attempt.at.map_or_else(|| duration * (index as u64 + 1) / (count + 1), |a| a.0);
        let resolution = if attempt.resolves_to.is_empty() {
            Resolution::NotModelled
        } else {
            Resolution::Resolved(&attempt.resolves_to)
        };
        let decision = decide(&ctx, &attempt.host, attempt.port.0, resolution);
        let binding_rule = match &decision {
            enclave_core::Decision::Allow { rule } => rule.binding().map(str::to_owned),
            enclave_core::Decision::Deny { .. } => None,
        };
        out.push((
            at,
            Action::Emit(BackendEvent::Egress {
                phase: EgressPhase::Run,
                host: attempt.host.clone(),
                port: attempt.port.0,
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
                host: binding.host.clone(),
                method,
                path: path.split(['?', '#']).next().unwrap_or("/").to_owned(),
                allowed: scope.is_ok(),
                status: None,
                reason: scope.err().map(|e| e.to_string()),
            }),
        ));
    }
}

fn output(model: &SimulateSpec, duration: u64, out: &mut Vec<(u64, Action)>) {
    let Some(logs) = model.logs else { return };
    let bytes = logs.bytes.map_or(0, |b| b.0);
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
