//! The daily provider budgets a prompt's calls are held to, kept in the store so every node
//! counts one total: the caller key's (`daily_provider_usd`) and each provider's own, over every
//! key (`[providers.x] daily_budget_usd`). Calls are counted as they happen, so a plan that fails
//! after paid attempts is charged for them.

use std::collections::HashMap;
use std::sync::Arc;

use reelsmith_director::{Budgets, LedgerEntry};
use reelsmith_providers::Failure;
use reelsmith_store::{Metadata, now_ms, usage_day};

use crate::state::AppState;

pub struct StoreBudgets {
    meta: Arc<dyn Metadata>,
    /// The caller's key and its cap (a key without one still has its spend counted).
    key: Option<(String, Option<f64>)>,
    /// Each capped provider, by the name its calls carry.
    providers: HashMap<String, f64>,
}

impl StoreBudgets {
    pub fn new(state: &AppState, key: Option<&reelsmith_store::ApiKey>) -> Self {
        Self {
            meta: state.meta.clone(),
            key: key.map(|k| (k.id.clone(), k.limits.daily_provider_usd.or(state.config.default_daily_provider_usd))),
            providers: state.config.providers.daily_budgets().into_iter().collect(),
        }
    }
}

#[async_trait::async_trait]
impl Budgets for StoreBudgets {
    async fn allow(&self, provider: &str) -> Result<(), Failure> {
        let day = usage_day(now_ms());
        let unreadable = |e: reelsmith_store::StoreError| Failure::Retryable(format!("budgets: {e}"));
        if let Some(&cap) = self.providers.get(provider) {
            let spent = self.meta.provider_day_spend(provider, day).await.map_err(unreadable)?;
            if spent >= cap {
                return Err(Failure::Quota(format!(
                    "{provider}: this server's daily budget for {provider} (${cap:.2}) is spent (${spent:.4} today); it renews at midnight UTC"
                )));
            }
        }
        if let Some((key, Some(cap))) = &self.key {
            let spent = self.meta.provider_spend(key, day).await.map_err(unreadable)?;
            if spent >= *cap {
                return Err(Failure::Quota(format!(
                    "{provider}: this key's daily provider budget (${cap:.2}) is spent (${spent:.4} today); it renews at midnight UTC"
                )));
            }
        }
        Ok(())
    }

    async fn spent(&self, entry: &LedgerEntry) {
        let day = usage_day(now_ms());
        let usd = entry.est_cost_usd;
        // Failed plans' calls included: what the providers will bill.
        metrics::counter!("reelsmith_provider_cost_usd_micros_total", "provider" => entry.provider.clone(), "stage" => entry.stage.clone())
            .increment((usd * 1e6).round() as u64);
        if let Some((key, _)) = &self.key
            && let Err(e) = self.meta.add_provider_spend(key, day, usd).await
        {
            tracing::warn!(error = %e, provider = %entry.provider, usd, "a key's provider spend was not counted");
        }
        if let Err(e) = self.meta.add_provider_day_spend(&entry.provider, day, usd).await {
            tracing::warn!(error = %e, provider = %entry.provider, usd, "a provider's spend was not counted");
        }
    }
}
