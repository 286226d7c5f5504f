//! CI gates: `p95>500ms,errors>0,GET /health:p99>5ms` — each expression is a *failing* condition.

use crate::{ENDPOINTS, EndpointStats, LoadError, LoadReport, parse_duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    P50,
    P75,
    P95,
    P99,
    Max,
    Mean,
    /// Number of failed requests.
    Errors,
    /// Failed requests in percent of all requests.
    ErrorRate,
    /// Number of 429 responses.
    RateLimited,
    /// Requests per second.
    Rps,
    /// Number of requests.
    Requests,
}

const METRICS: [(&str, Metric); 11] = [
    ("p50", Metric::P50),
    ("p75", Metric::P75),
    ("p95", Metric::P95),
    ("p99", Metric::P99),
    ("max", Metric::Max),
    ("mean", Metric::Mean),
    ("errors", Metric::Errors),
    ("error_rate", Metric::ErrorRate),
    ("rate_limited", Metric::RateLimited),
    ("rps", Metric::Rps),
    ("requests", Metric::Requests),
];

impl Metric {
    pub fn name(self) -> &'static str {
        METRICS.iter().find(|(_, m)| *m == self).map_or("?", |(n, _)| n)
    }

    fn is_latency(self) -> bool {
        matches!(self, Metric::P50 | Metric::P75 | Metric::P95 | Metric::P99 | Metric::Max | Metric::Mean)
    }

    fn value(self, s: &EndpointStats) -> f64 {
        match self {
            Metric::P50 => s.p50_ms,
            Metric::P75 => s.p75_ms,
            Metric::P95 => s.p95_ms,
            Metric::P99 => s.p99_ms,
            Metric::Max => s.max_ms,
            Metric::Mean => s.mean_ms,
            Metric::Errors => s.errors as f64,
            Metric::ErrorRate if s.count == 0 => 0.0,
            Metric::ErrorRate => s.errors as f64 * 100.0 / s.count as f64,
            Metric::RateLimited => s.rate_limited as f64,
            Metric::Rps => s.rps,
            Metric::Requests => s.count as f64,
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            m if m.is_latency() => format!("{v:.2} ms"),
            Metric::ErrorRate => format!("{v:.2}%"),
            Metric::Rps => format!("{v:.1} req/s"),
            _ => format!("{v}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
        }
    }
}

/// A failing condition: `metric op value`, over one endpoint or (when `endpoint` is None) all.
/// Latencies are in ms, `error_rate` in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub endpoint: Option<String>,
    pub metric: Metric,
    pub op: Op,
    pub value: f64,
    /// The expression as written.
    pub text: String,
}

impl Threshold {
    pub fn parse(expr: &str) -> Result<Threshold, LoadError> {
        let text = expr.trim();
        let bad = |reason: String| LoadError::Threshold { expr: text.into(), reason };
        if text.is_empty() {
            return Err(bad("empty expression".into()));
        }
        let (endpoint, cond) = match text.rsplit_once(':') {
            Some((ep, cond)) => {
                let ep = ep.trim();
                if !ENDPOINTS.contains(&ep) {
                    return Err(bad(format!("unknown endpoint {ep:?} (expected one of: {})", ENDPOINTS.join(", "))));
                }
                (Some(ep.to_string()), cond.trim())
            }
            None => (None, text),
        };
        let Some(at) = cond.find(['<', '>']) else {
            return Err(bad(format!("no comparison in {cond:?} (expected <, <=, > or >=, e.g. p95>500ms)")));
        };
        let (name, rest) = (cond[..at].trim(), &cond[at..]);
        let (op, value) = match rest.as_bytes() {
            [b'>', b'=', ..] => (Op::Ge, &rest[2..]),
            [b'<', b'=', ..] => (Op::Le, &rest[2..]),
            [b'>', ..] => (Op::Gt, &rest[1..]),
            _ => (Op::Lt, &rest[1..]),
        };
        let value = value.trim();
        let metric = METRICS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, m)| *m).ok_or_else(|| {
            let known: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
            bad(format!("unknown metric {name:?} (expected one of: {})", known.join(", ")))
        })?;
        let value = match metric {
            m if m.is_latency() => {
                parse_duration(value).map_err(|e| bad(format!("{}: {e}", m.name())))?.as_secs_f64() * 1e3
            }
            Metric::ErrorRate => {
                let Some(pct) = value.strip_suffix('%') else {
                    return Err(bad(format!("error_rate needs a percentage such as 1%, not {value:?}")));
                };
                match pct.trim().parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => p,
                    _ => return Err(bad(format!("{value:?} is not a percentage between 0% and 100%"))),
                }
            }
            Metric::Rps => match value.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => v,
                _ => return Err(bad(format!("rps needs a number of requests per second, not {value:?}"))),
            },
            m => match value.parse::<u64>() {
                Ok(v) => v as f64,
                Err(_) => return Err(bad(format!("{} needs a whole number, not {value:?}", m.name()))),
            },
        };
        Ok(Threshold { endpoint, metric, op, value, text: text.into() })
    }
}

/// Comma-separated threshold expressions; empty parts are skipped.
pub fn parse_thresholds(s: &str) -> Result<Vec<Threshold>, LoadError> {
    s.split(',').filter(|part| !part.trim().is_empty()).map(Threshold::parse).collect()
}

/// One message per violated threshold; empty when all pass. A latency threshold on an endpoint
/// that saw no requests is a violation too: it could not be checked.
pub fn check(report: &LoadReport, thresholds: &[Threshold]) -> Vec<String> {
    let none = EndpointStats::default();
    let mut violations = vec![];
    for t in thresholds {
        let (scope, stats) = match &t.endpoint {
            Some(ep) => (ep.as_str(), report.endpoints.get(ep).unwrap_or(&none)),
            None => ("all endpoints", &report.overall),
        };
        if t.metric.is_latency() && stats.count == 0 {
            violations.push(format!("{}: no requests to {scope}, so its {} is unknown", t.text, t.metric.name()));
            continue;
        }
        let actual = t.metric.value(stats);
        if t.op.holds(actual, t.value) {
            violations.push(format!("{}: {} of {scope} is {}", t.text, t.metric.name(), t.metric.show(actual)));
        }
    }
    violations
}
