//! The operator's own Prometheus metrics (`conflux_operator_*`), their registry and the text
//! encoding served on `/metrics`.

use std::time::Instant;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounter,
    errors: IntCounterVec,
    duration: Histogram,
    membership_changes: IntCounterVec,
    waits: IntCounterVec,
    leader: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounter::new("conflux_operator_reconciles_total", "Reconcile runs")?;
        let errors = IntCounterVec::new(
            Opts::new("conflux_operator_reconcile_errors_total", "Reconcile runs that failed, by error"),
            &["error"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new("conflux_operator_reconcile_duration_seconds", "Duration of one reconcile run")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )?;
        let membership_changes = IntCounterVec::new(
            Opts::new(
                "conflux_operator_membership_changes_total",
                "Actions carried out against clusters, by kind and result (ok, error)",
            ),
            &["kind", "result"],
        )?;
        let waits = IntCounterVec::new(
            Opts::new("conflux_operator_waits_total", "Reconciles where the planner waited, by reason"),
            &["reason"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(membership_changes.clone()))?;
        let leader = IntGauge::new("conflux_operator_leader", "1 while this replica holds the Lease and reconciles")?;
        registry.register(Box::new(waits.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Metrics { registry, reconciles, errors, duration, membership_changes, waits, leader })
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer { histogram: self.duration.clone(), started: Instant::now() }
    }

    pub fn reconcile_failed(&self, error_label: &str) {
        self.errors.with_label_values(&[error_label]).inc();
    }

    pub fn membership_change(&self, kind: &str, ok: bool) {
        self.membership_changes.with_label_values(&[kind, if ok { "ok" } else { "error" }]).inc();
    }

    pub fn waited(&self, reason: &str) {
        self.waits.with_label_values(&[reason]).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

/// Observes the reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exported_with_the_operator_prefix_and_labels() {
        let metrics = Metrics::new().expect("metrics register");
        drop(metrics.reconcile_started());
        metrics.reconcile_failed("kube");
        metrics.membership_change("RemoveMember", true);
        metrics.waited("WouldLoseQuorum");
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("conflux_operator_leader 0"), "{text}");
        metrics.set_leader(true);
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("conflux_operator_reconciles_total 1"), "{text}");
        assert!(text.contains("conflux_operator_reconcile_errors_total{error=\"kube\"} 1"), "{text}");
        assert!(text.contains("conflux_operator_reconcile_duration_seconds_count 1"), "{text}");
        assert!(
            text.contains("conflux_operator_membership_changes_total{kind=\"RemoveMember\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("conflux_operator_waits_total{reason=\"WouldLoseQuorum\"} 1"), "{text}");
        assert!(text.contains("conflux_operator_leader 1"), "{text}");
    }
}
