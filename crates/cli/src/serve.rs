//! `reelsmith serve` and `reelsmith keys`: the generation service and its API keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reelsmith_server::Config;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML config file (every key can also come from REELSMITH_<KEY> variables).
    #[arg(long, env = "REELSMITH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Database, results and uploads (default ./reelsmith-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// API only: leave rendering to `reelsmith worker` processes.
    #[arg(long)]
    no_worker: bool,
}

impl ServeArgs {
    fn config(&self, cache_dir: Option<PathBuf>) -> Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(b) = self.bind {
            c.bind = b;
        }
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if cache_dir.is_some() {
            c.cache_dir = cache_dir;
        }
        if self.no_worker {
            c.workers = false;
        }
        c.render_program = reelsmith_server::isolation::this_executable();
        c.render_trace = crate::tracing_setup::render_hooks();
        Ok(c)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn serve(args: &ServeArgs, cache_dir: Option<PathBuf>) -> Result<()> {
    let config = args.config(cache_dir)?;
    run(config, "reelsmith listening on")
}

pub fn worker(args: &ServeArgs, cache_dir: Option<PathBuf>) -> Result<()> {
    let mut config = args.config(cache_dir)?;
    if args.no_worker {
        bail!(
            "`reelsmith worker --no-worker` would do nothing; use `reelsmith serve --no-worker` for an API-only node"
        );
    }
    config.api = false;
    config.workers = true;
    if args.bind.is_none() {
        config.bind = "127.0.0.1:0".parse().expect("valid address");
    }
    run(config, "reelsmith worker listening on")
}

fn run(config: Config, banner: &'static str) -> Result<()> {
    runtime()?.block_on(async move {
        let running = reelsmith_server::start(config).await?;
        // Scripts and tests read the address from this line (the port may be 0 = any).
        println!("{banner} http://{}", running.addr);
        let stop = running.stopped();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate() => {}
            _ = stop.cancelled() => {}
        }
        eprintln!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; its token is printed once.
    Create {
        name: String,
        /// Requests per second (default from config).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long)]
        burst: Option<u32>,
        /// Generations queued or running at once.
        #[arg(long)]
        max_jobs: Option<u32>,
        /// The highest priority (0-9) the key may ask for (default from config).
        #[arg(long)]
        max_priority: Option<u8>,
        /// The largest generation the key may submit, in megapixel-frames (frames × pixels / 10⁶;
        /// default: the server's max_job_megapixel_frames).
        #[arg(long)]
        max_job_megapixel_frames: Option<f64>,
        /// Megapixel-frames the key may submit per UTC day (default: default_daily_megapixel_frames).
        #[arg(long)]
        daily_megapixel_frames: Option<f64>,
        /// Scenes the key may send to D-ID per UTC day (default: default_daily_did_scenes).
        #[arg(long)]
        daily_did_scenes: Option<u64>,
        /// Estimated US dollars the key's prompts may spend on paid providers per UTC day
        /// (default: default_daily_provider_usd).
        #[arg(long)]
        daily_provider_usd: Option<f64>,
    },
    List,
    Revoke {
        id: String,
    },
    /// A new webhook signing secret for a key (printed once; the old one stops at once).
    RotateWebhookSecret {
        id: String,
    },
}

/// Where the service keeps its database: for commands that only read or write records.
#[derive(clap::Args)]
pub struct DatabaseArgs {
    /// TOML config file (every key can also come from REELSMITH_<KEY> variables).
    #[arg(long, env = "REELSMITH_CONFIG")]
    config: Option<PathBuf>,
    /// Database, results and uploads (default ./reelsmith-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn keys(args: &DatabaseArgs, cmd: &KeysCommand) -> Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    runtime()?.block_on(async move {
        let (_, store) = reelsmith_server::open_database(&config).await.context("opening the database")?;
        match cmd {
            KeysCommand::Create {
                name,
                rate,
                burst,
                max_jobs,
                max_priority,
                max_job_megapixel_frames,
                daily_megapixel_frames,
                daily_did_scenes,
                daily_provider_usd,
            } => {
                if name.trim().is_empty() || name.len() > 100 {
                    bail!("a key name must be 1-100 characters");
                }
                for (flag, v) in [
                    ("--max-job-megapixel-frames", max_job_megapixel_frames),
                    ("--daily-megapixel-frames", daily_megapixel_frames),
                    ("--daily-provider-usd", daily_provider_usd),
                ] {
                    if let Some(v) = v
                        && !(v.is_finite() && *v > 0.0)
                    {
                        bail!("{flag} must be a positive number, not {v}");
                    }
                }
                let (token, mut key) = reelsmith_server::mint(
                    name,
                    rate.unwrap_or(config.default_rate_per_s),
                    burst.unwrap_or(config.default_burst),
                    max_jobs.unwrap_or(config.default_max_concurrent_jobs),
                    max_priority.unwrap_or(config.default_max_priority).min(9),
                );
                key.limits = reelsmith_store::KeyLimits {
                    job_megapixel_frames: *max_job_megapixel_frames,
                    daily_megapixel_frames: *daily_megapixel_frames,
                    daily_did_scenes: *daily_did_scenes,
                    daily_provider_usd: *daily_provider_usd,
                };
                store.create_api_key(&key, &reelsmith_store::hash_token(&token)).await?;
                eprintln!(
                    "created key {} ({}): {} requests/s, burst {}, {} concurrent jobs, priority up to {}; the token is shown only now:",
                    key.id, key.name, key.rate_per_s, key.burst, key.max_concurrent_jobs, key.max_priority
                );
                eprintln!(
                    "its webhooks are signed with this secret (shown only now; rotate with `keys rotate-webhook-secret`): {}",
                    key.webhook_secret.as_deref().unwrap_or_default()
                );
                println!("{token}");
            }
            KeysCommand::List => {
                for k in store.list_api_keys().await? {
                    let state = if k.revoked_at_ms.is_some() { "revoked" } else { "active" };
                    let limits = serde_json::to_string(&k.limits).unwrap_or_default();
                    // Keys older than per-key secrets sign with the shared one until rotated.
                    let secret = if k.webhook_secret.is_some() { "own webhook secret" } else { "SHARED webhook secret" };
                    println!(
                        "{}\t{}\t{}\t{}/s burst {}\t{} jobs\tpriority <= {}\t{secret}\t{limits}",
                        k.id, k.name, state, k.rate_per_s, k.burst, k.max_concurrent_jobs, k.max_priority
                    );
                }
            }
            KeysCommand::RotateWebhookSecret { id } => {
                let secret = reelsmith_server::access::new_webhook_secret();
                if !store.set_webhook_secret(id, &secret).await? {
                    bail!("no key with id '{id}'");
                }
                eprintln!("a new webhook secret for {id}; the old one no longer signs:");
                println!("{secret}");
            }
            KeysCommand::Revoke { id } => {
                if !store.revoke_api_key(id).await? {
                    bail!("no active key with id '{id}'");
                }
                eprintln!("revoked {id}");
            }
        }
        Ok(())
    })
}
