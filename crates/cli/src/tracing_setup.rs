//! Logs to stderr (`REELSMITH_LOG`), and with `--otlp-endpoint` (or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) the same spans — `request`, `job`, `render`, `stage` — exported
//! as OpenTelemetry traces over OTLP/HTTP (JSON), to a collector, Jaeger, Tempo…

use anyhow::Result;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Flushes exported spans when dropped (at the end of `main`).
pub struct Guard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: flushing traces: {e}");
        }
    }
}

pub fn init(otlp_endpoint: Option<&str>) -> Result<Guard> {
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_env("REELSMITH_LOG").unwrap_or_else(|_| "warn".into()));
    let registry = tracing_subscriber::registry().with(logs);
    match otlp_endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        None => {
            registry.init();
            Ok(Guard {
                #[cfg(feature = "otlp")]
                provider: None,
            })
        }
        #[cfg(feature = "otlp")]
        Some(endpoint) => {
            use opentelemetry::trace::TracerProvider as _;
            use opentelemetry_otlp::{Protocol, WithExportConfig};
            // The standard variable names the collector's base URL; traces go to /v1/traces.
            let url = if endpoint.ends_with("/v1/traces") {
                endpoint.to_string()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(url)
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name("reelsmith").build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let spans = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("reelsmith"))
                .with_filter(EnvFilter::try_from_env("REELSMITH_TRACE").unwrap_or_else(|_| "info".into()));
            registry.with(spans).init();
            let _ = PROVIDER.set(provider.clone());
            Ok(Guard { provider: Some(provider) })
        }
        #[cfg(not(feature = "otlp"))]
        Some(_) => {
            anyhow::bail!("this reelsmith was built without the `otlp` feature; rebuild with it to export traces")
        }
    }
}

#[cfg(feature = "otlp")]
static PROVIDER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = std::sync::OnceLock::new();

/// How render processes join the server's traces: the job span's W3C `traceparent` goes with
/// each render, and the render process makes it the parent of its `render` span.
pub fn render_hooks() -> Option<reelsmith_server::isolation::TraceHooks> {
    #[cfg(feature = "otlp")]
    if PROVIDER.get().is_some() {
        return Some(reelsmith_server::isolation::TraceHooks {
            current: current_traceparent,
            enter: enter_traceparent,
            flush: || {
                if let Some(p) = PROVIDER.get() {
                    let _ = p.force_flush();
                }
            },
        });
    }
    None
}

#[cfg(feature = "otlp")]
fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

#[cfg(feature = "otlp")]
fn enter_traceparent(traceparent: &str) -> Option<Box<dyn std::any::Any>> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace), Some(span), Some(flags), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(sc);
    Some(Box::new(cx.attach()))
}
