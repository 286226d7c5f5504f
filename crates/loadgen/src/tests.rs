use super::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn percentile_nearest_rank() {
    let v: Vec<f64> = (1..=20).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.0), 1.0);
    assert_eq!(percentile(&v, 5.0), 1.0);
    assert_eq!(percentile(&v, 5.1), 2.0);
    assert_eq!(percentile(&v, 50.0), 10.0);
    assert_eq!(percentile(&v, 95.0), 19.0);
    assert_eq!(percentile(&v, 99.0), 20.0);
    assert_eq!(percentile(&v, 100.0), 20.0);
    assert_eq!(percentile(&[7.5], 0.0), 7.5);
    assert_eq!(percentile(&[7.5], 100.0), 7.5);
    // Out-of-range q is clamped; empty input and NaN q give NaN rather than panicking.
    assert_eq!(percentile(&v, -3.0), 1.0);
    assert_eq!(percentile(&v, 250.0), 20.0);
    assert!(percentile(&[], 50.0).is_nan());
    assert!(percentile(&v, f64::NAN).is_nan());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
    assert_eq!(parse_duration("250ms").unwrap(), ms(250));
    assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    for bad in ["", "30", "s", "-1s", "1.2.3s", "5 parsecs", "10d", "1e400s", "99999999999999999999h"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
    }
    let e = parse_duration("10d").unwrap_err().to_string();
    assert!(e.contains("\"10d\"") && e.contains("unknown unit"), "{e}");
}

#[test]
fn think_times() {
    assert_eq!("0ms".parse::<ThinkTime>().unwrap(), ThinkTime::default());
    assert_eq!("100ms".parse::<ThinkTime>().unwrap(), ThinkTime { min: ms(100), max: ms(100) });
    assert_eq!("100ms..0.5s".parse::<ThinkTime>().unwrap(), ThinkTime { min: ms(100), max: ms(500) });
    assert!("500ms..100ms".parse::<ThinkTime>().is_err());
    assert!("100ms..".parse::<ThinkTime>().is_err());
}

#[test]
fn scenarios() {
    assert_eq!("mixed".parse::<Scenario>().unwrap(), Scenario::Mixed { health: 30, submit: 20, poll: 50 });
    assert_eq!("poll".parse::<Scenario>().unwrap(), Scenario::Poll);
    assert_eq!("mixed:1/0/3".parse::<Scenario>().unwrap(), Scenario::Mixed { health: 1, submit: 0, poll: 3 });
    assert!("mixed:1/2".parse::<Scenario>().is_err());
    assert!("mixed:a/2/3".parse::<Scenario>().is_err());
    assert!("everything".parse::<Scenario>().is_err());
}

#[test]
fn template_is_valid_json_and_numbered() {
    let t = default_submit_template();
    let body: serde_json::Value = serde_json::from_str(&render_template(&t, 42)).unwrap();
    assert_eq!(body["spec"]["scenes"][0]["title"], "load 42");
    assert_eq!(body["priority"], 1);
    assert_eq!(render_template("{{n}}-{{n}}", 7), "7-7");
    let (a, b) = (next_submission_number(), next_submission_number());
    assert!(b > a && b < 1 << 53);
}

#[test]
fn config_validation() {
    let ok = LoadConfig::default();
    assert!(ok.validate().is_ok());
    let bad = [
        LoadConfig { url: "ftp://x".into(), ..ok.clone() },
        LoadConfig { url: "not a url".into(), ..ok.clone() },
        LoadConfig { users: 0, ..ok.clone() },
        LoadConfig { duration: Duration::ZERO, ..ok.clone() },
        LoadConfig { ramp_up: Duration::from_secs(31), ..ok.clone() },
        LoadConfig { scenario: Scenario::Mixed { health: 0, submit: 0, poll: 0 }, ..ok.clone() },
        LoadConfig { submit_template: "{\"a\": {{n}".into(), ..ok.clone() },
        LoadConfig { pattern: Pattern::Spike { at: ms(30_000), users: 5, hold: ms(1) }, ..ok.clone() },
        LoadConfig { pattern: Pattern::Spike { at: ms(1), users: 0, hold: ms(1) }, ..ok.clone() },
        LoadConfig { request_timeout: Duration::ZERO, ..ok.clone() },
    ];
    for c in bad {
        assert!(matches!(c.validate(), Err(LoadError::Config(_))), "{c:?} should be rejected");
    }
    let spike = LoadConfig { users: 0, pattern: Pattern::Spike { at: ms(10), users: 7, hold: ms(5) }, ..ok };
    assert_eq!(spike.validate().unwrap().1, 7);
}

#[test]
fn thresholds_parse() {
    let t = parse_thresholds("p95>500ms, p99>1s,errors>0,error_rate>=1.5%,rps<100,GET /health:p99>5ms,").unwrap();
    assert_eq!(t.len(), 6);
    assert_eq!((t[0].metric, t[0].op, t[0].value, t[0].endpoint.as_deref()), (Metric::P95, Op::Gt, 500.0, None));
    assert_eq!((t[1].metric, t[1].value), (Metric::P99, 1000.0));
    assert_eq!((t[2].metric, t[2].op, t[2].value), (Metric::Errors, Op::Gt, 0.0));
    assert_eq!((t[3].metric, t[3].op, t[3].value), (Metric::ErrorRate, Op::Ge, 1.5));
    assert_eq!((t[4].metric, t[4].op, t[4].value), (Metric::Rps, Op::Lt, 100.0));
    assert_eq!(t[5].endpoint.as_deref(), Some(HEALTH));
    assert_eq!((t[5].metric, t[5].value), (Metric::P99, 5.0));
    let scoped = parse_thresholds("POST /api/v1/generations : max<=250us").unwrap();
    assert_eq!((scoped[0].endpoint.as_deref(), scoped[0].op, scoped[0].value), (Some(SUBMIT), Op::Le, 0.25));
    assert!(parse_thresholds("").unwrap().is_empty());
}

#[test]
fn thresholds_reject_bad_input_naming_the_part() {
    let cases = [
        ("p95>500", "missing unit"),
        ("p95>500parsecs", "unknown unit"),
        ("p96>1s", "unknown metric \"p96\""),
        ("latency>1s", "unknown metric"),
        ("errors", "no comparison"),
        ("errors>1.5", "whole number"),
        ("errors>-1", "whole number"),
        ("error_rate>1", "percentage"),
        ("error_rate>101%", "between 0% and 100%"),
        ("rps<fast", "requests per second"),
        ("rps<", "requests per second"),
        ("GET /nope:p99>1s", "unknown endpoint \"GET /nope\""),
        (">1s", "unknown metric \"\""),
    ];
    for (input, want) in cases {
        let e = parse_thresholds(&format!("p50>1ms,{input}")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(want), "{input:?}: {msg:?} lacks {want:?}");
        assert!(msg.contains(input.trim()), "{input:?}: {msg:?} does not name the expression");
    }
}

fn report() -> LoadReport {
    let health = EndpointStats {
        count: 90,
        errors: 9,
        rate_limited: 3,
        rps: 45.0,
        p50_ms: 2.0,
        p75_ms: 3.0,
        p95_ms: 8.0,
        p99_ms: 12.0,
        max_ms: 40.0,
        mean_ms: 2.5,
        statuses: BTreeMap::from([(200, 81), (429, 3), (500, 6)]),
        ..Default::default()
    };
    let submit = EndpointStats { count: 10, p50_ms: 20.0, p99_ms: 90.0, max_ms: 95.0, rps: 5.0, ..Default::default() };
    let overall =
        EndpointStats { count: 100, errors: 9, rate_limited: 3, rps: 50.0, p99_ms: 80.0, ..Default::default() };
    LoadReport {
        duration_s: 2.0,
        users: 4,
        peak_users: 4,
        setup_requests: 1,
        total_requests: 100,
        total_errors: 9,
        rps: 50.0,
        overall,
        endpoints: BTreeMap::from([(HEALTH.to_string(), health), (SUBMIT.to_string(), submit)]),
    }
}

#[test]
fn thresholds_check() {
    let r = report();
    let failing = |s: &str| check(&r, &parse_thresholds(s).unwrap());
    assert!(failing("p99>80ms,errors>9,error_rate>9%,rps<50,rate_limited>3,requests<100").is_empty());
    assert_eq!(failing("p99>79ms").len(), 1);
    assert!(failing("error_rate>=9%")[0].contains("9.00%"));
    assert_eq!(failing("errors>0,rps<51,requests>=100,GET /health:rate_limited>2").len(), 4);
    assert_eq!(failing("GET /health:p99>12ms,POST /api/v1/generations:p99>12ms").len(), 1);
    let msg = &failing("GET /health:p95>5ms")[0];
    assert!(msg.contains("GET /health") && msg.contains("8.00 ms"), "{msg}");
    // An endpoint without requests: counts are zero, latencies cannot be checked.
    assert!(failing("GET /api/v1/generations/{id}:errors>0").is_empty());
    assert!(failing("GET /api/v1/generations/{id}:p99>1s")[0].contains("no requests"));
}

#[test]
fn histogram_stats_and_table() {
    let mut acc = Acc::new();
    for i in 1..=100u64 {
        let status = if i % 10 == 0 {
            Some(500)
        } else if i == 7 {
            Some(429)
        } else {
            Some(200)
        };
        acc.record(&Outcome { latency: ms(i), status, timed_out: false, retry_after: None, id: None });
    }
    acc.record(&Outcome { latency: ms(5), status: None, timed_out: true, retry_after: None, id: None });
    let s = acc.stats(2.0);
    assert_eq!((s.count, s.errors, s.rate_limited, s.timeouts, s.transport_errors), (101, 12, 1, 1, 0));
    assert_eq!(s.statuses, BTreeMap::from([(200, 89), (429, 1), (500, 10)]));
    assert!((s.p50_ms - 50.0).abs() < 0.1, "{}", s.p50_ms);
    assert!((s.p99_ms - 99.0).abs() < 0.1, "{}", s.p99_ms);
    assert!((s.max_ms - 100.0).abs() < 0.1, "{}", s.max_ms);
    assert!((s.rps - 50.5).abs() < 1e-9);

    let r = report();
    let table = r.to_table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[1].starts_with("endpoint") && lines[4].starts_with("all"));
    // Right-aligned numeric columns end at the same place on every row.
    let end = |l: &str, w: &str| l.find(w).map(|i| i + w.len());
    assert_eq!(end(lines[1], "requests"), end(lines[2], " 90"));
    assert_eq!(end(lines[1], "requests"), end(lines[4], "100"));
    assert!(lines[2].ends_with("200:81 429:3 500:6"), "{}", lines[2]);

    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<LoadReport>(&json).unwrap(), r);
}
