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
            Ok(Guard { provider: Some(provider) })
        }
        #[cfg(not(feature = "otlp"))]
        Some(_) => {
            anyhow::bail!("this reelsmith was built without the `otlp` feature; rebuild with it to export traces")
        }
    }
}
