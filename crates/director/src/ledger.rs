//! A generation's ledger of provider calls, shared by its stages, and the daily budgets its paid
//! calls are held to. Each paid call is counted as it happens, so a plan that fails after three
//! paid attempts is charged for them too.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reelsmith_providers::Failure;

use crate::LedgerEntry;

/// The daily budgets provider calls count against (the caller's key, each provider's own): the
/// service keeps them in its store, shared by every node.
#[async_trait]
pub trait Budgets: Send + Sync {
    /// `Err` ([`Failure::Quota`], naming the budget and when it renews) when a budget that a
    /// call to `provider` would count against is spent.
    async fn allow(&self, provider: &str) -> Result<(), Failure>;
    /// Counts a paid call (not a cache answer) against the budgets.
    async fn spent(&self, entry: &LedgerEntry);
}

/// The calls one generation made, in the order they ended.
#[derive(Clone, Default)]
pub struct Ledger {
    entries: Arc<Mutex<Vec<LedgerEntry>>>,
    budgets: Option<Arc<dyn Budgets>>,
}

impl Ledger {
    pub fn new(budgets: Option<Arc<dyn Budgets>>) -> Self {
        Self { entries: Arc::default(), budgets }
    }

    /// Asked before a paid call (never before a cache answer).
    pub async fn allow(&self, provider: &str) -> Result<(), Failure> {
        match &self.budgets {
            Some(b) => b.allow(provider).await,
            None => Ok(()),
        }
    }

    /// Adds a call; a paid one is counted against the budgets at once.
    pub async fn record(&self, entry: LedgerEntry) {
        if let Some(b) = &self.budgets
            && !entry.cache_hit
            && entry.est_cost_usd > 0.0
        {
            b.spent(&entry).await;
        }
        self.entries.lock().expect("ledger").push(entry);
    }

    /// Every call so far.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        self.entries.lock().expect("ledger").clone()
    }

    /// Estimated USD of the calls the providers answered (cache answers are free).
    pub fn spent_usd(&self) -> f64 {
        self.entries.lock().expect("ledger").iter().filter(|e| !e.cache_hit).map(|e| e.est_cost_usd).sum()
    }
}
