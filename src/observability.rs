//! Metrics in the Prometheus text format (`GET /metrics`), through the
//! `metrics` facade and `metrics-exporter-prometheus`'s recorder. Code that
//! counts something calls the `metrics` macros with the names below; this
//! module installs the recorder once per process and renders it.
//!
//! Label values are always from small fixed sets (route templates, status
//! codes, grant and key types), never request data, so a client cannot
//! grow the number of series.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by route template, method and status.
pub const HTTP_REQUESTS: &str = "slcs_http_requests_total";
/// Request latency by route template, seconds.
pub const HTTP_DURATION: &str = "slcs_http_request_duration_seconds";
/// Access tokens issued, by grant type.
pub const TOKENS_ISSUED: &str = "slcs_tokens_issued_total";
/// Certificates issued, by key type of the certified key.
pub const CERTIFICATES_ISSUED: &str = "slcs_certificates_issued_total";
/// Certificate requests refused by a quota, by quota.
pub const QUOTA_REJECTIONS: &str = "slcs_quota_rejections_total";
/// Requests refused by a rate limit, by limit (`per_address`, `per_client`).
pub const RATE_LIMITED: &str = "slcs_rate_limited_total";
/// Requests shed because the service was at capacity.
pub const LOAD_SHED: &str = "slcs_load_shed_total";
/// Authorization codes whose PKCE challenge the client used before
/// (RFC 9700 §2.1.1: constant challenges).
pub const PKCE_CHALLENGE_REPEATED: &str = "slcs_pkce_challenge_repeated_total";
/// Time of one group commit (flush + fdatasync), seconds.
pub const STORE_FLUSH_DURATION: &str = "slcs_store_flush_seconds";
/// Writes made durable by one group commit.
pub const STORE_FLUSH_BATCH: &str = "slcs_store_flush_batch_size";

/// Installs the process-wide recorder and returns the handle that renders
/// it; `None` if a recorder is installed already (a second server in one
/// process, as in some tests), in which case metrics go to that one.
pub fn install() -> Option<PrometheusHandle> {
    let latency = [
        0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ];
    let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &latency)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(STORE_FLUSH_DURATION.into()), &latency)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(STORE_FLUSH_BATCH.into()), &batch))
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    describe();
    Some(handle)
}

/// How often pending histogram samples are folded into their buckets.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds pending histogram samples into their buckets every
/// [`UPKEEP_INTERVAL`]. The recorder built here (without the exporter's own
/// HTTP listener) keeps every histogram sample until upkeep runs, so
/// without this task memory would grow with each request between scrapes.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by route"
    );
    metrics::describe_counter!(TOKENS_ISSUED, "access tokens issued by grant type");
    metrics::describe_counter!(
        CERTIFICATES_ISSUED,
        "certificates issued by key type of the certified key"
    );
    metrics::describe_counter!(QUOTA_REJECTIONS, "certificate requests refused by a quota");
    metrics::describe_counter!(RATE_LIMITED, "requests refused by a rate limit");
    metrics::describe_counter!(LOAD_SHED, "requests shed at capacity");
    metrics::describe_counter!(
        PKCE_CHALLENGE_REPEATED,
        "authorization codes whose PKCE challenge the client had used before"
    );
    metrics::describe_histogram!(
        STORE_FLUSH_DURATION,
        metrics::Unit::Seconds,
        "duration of one group commit (flush and fdatasync)"
    );
    metrics::describe_histogram!(STORE_FLUSH_BATCH, "writes made durable by one group commit");
}

/// The sum of counter `name`'s samples in a rendering of the recorder
/// (Prometheus text format) whose labels contain `label_part` (every
/// sample when it is empty): the admin console's "since start" figures,
/// read from the one place they are counted.
pub fn counter_total(exposition: &str, name: &str, label_part: &str) -> u64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .contains(label_part)
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_by_name_and_label() {
        let text = "\
# HELP slcs_http_requests_total Requests
# TYPE slcs_http_requests_total counter
slcs_http_requests_total{route=\"/token\",method=\"POST\",status=\"200\"} 5
slcs_http_requests_total{route=\"/token\",method=\"POST\",status=\"401\"} 2
slcs_http_requests_total{route=\"/login\",method=\"POST\",status=\"429\"} 1
slcs_http_requests_total_other 100
slcs_tokens_issued_total 7
";
        assert_eq!(counter_total(text, HTTP_REQUESTS, ""), 8);
        assert_eq!(counter_total(text, HTTP_REQUESTS, "status=\"4"), 3);
        assert_eq!(counter_total(text, TOKENS_ISSUED, ""), 7);
        assert_eq!(counter_total(text, CERTIFICATES_ISSUED, ""), 0);
    }
}
