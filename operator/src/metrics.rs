//! What the operator exposes on `/metrics`: reconciles and their errors per
//! controller, tasks' phase changes, and how long placing a task took.
//! Every label set is bounded (controllers and phases are fixed lists).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ControllerLabel, Counter>,
    phases: Family<PhaseLabel, Counter>,
    placement: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rauha_operator");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ControllerLabel, Counter>::default();
        let phases = Family::<PhaseLabel, Counter>::default();
        let placement = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5]);
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller",
            errors.clone(),
        );
        registry.register(
            "task_phase_changes",
            "Tasks that entered each phase",
            phases.clone(),
        );
        registry.register(
            "placement_seconds",
            "Time to place a task: node choice and pod creation",
            placement.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            phases,
            placement,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, controller: &'static str) {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .inc();
    }

    pub fn failed(&self, controller: &'static str) {
        self.errors
            .get_or_create(&ControllerLabel { controller })
            .inc();
    }

    pub fn phase(&self, phase: Phase) {
        self.phases
            .get_or_create(&PhaseLabel {
                phase: phase.as_str(),
            })
            .inc();
    }

    pub fn placed(&self, took: Duration) {
        self.placement.observe(took.as_secs_f64());
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Metrics::default();
        m.reconciled("sandboxtask");
        m.phase(Phase::Succeeded);
        m.placed(Duration::from_millis(20));
        let text = m.render();
        assert!(
            text.contains("rauha_operator_reconciles_total{controller=\"sandboxtask\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rauha_operator_task_phase_changes_total{phase=\"Succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rauha_operator_placement_seconds_count 1"),
            "{text}"
        );
    }
}
