//! The shipped dashboard and alert rules use every agreed metric name (COMMON names in
//! `svc::metrics::AGREED`), and parse.

const DASHBOARD: &str = include_str!("../../../../deploy/grafana/motcua.json");
const ALERTS: &str = include_str!("../../../../deploy/prometheus/alerts.yml");

#[test]
fn the_dashboard_is_json_with_panels_and_the_alerts_use_every_metric() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{panel}"
        );
    }
    for name in svc::metrics::AGREED {
        assert!(
            DASHBOARD.contains(name),
            "the dashboard does not show {name}"
        );
    }
    for name in svc::metrics::ALERTED {
        assert!(ALERTS.contains(name), "no alert on {name}");
    }
    // The YAML's shape, without a YAML parser: one group, rules with alert, expr, labels.
    assert!(
        ALERTS.starts_with("# ") && ALERTS.contains("\ngroups:\n  - name: motcua\n    rules:\n")
    );
    let rules = ALERTS.matches("\n      - alert: ").count();
    assert_eq!(rules, ALERTS.matches("\n        expr: ").count());
    assert!(!ALERTS.contains('\t'), "YAML forbids tabs");
}
