//! The chain edges with every call counted for `/metrics` and the head kept for health.

use std::sync::Arc;

use super::edges::{ChainEdge, ChainRefusal, EdgeError, Observation, Verdict, WeightsChain};
use super::monitor::Monitor;
use crate::chain::weights::{Sent, Standing};
use crate::machine::event::{SubmitMethod, WeightsCommitted, WeightsPrepared};

/// An edge whose calls the monitor counts.
#[derive(Debug)]
pub struct Metered<T> {
    /// The edge.
    pub inner: T,
    /// Where calls are counted.
    pub monitor: Arc<Monitor>,
}

impl<T> Metered<T> {
    fn count<V>(&self, call: &'static str, result: &Result<V, EdgeError>) {
        self.monitor.chain_call(call, result.is_ok());
    }
}

impl<C: ChainEdge> ChainEdge for Metered<C> {
    async fn head(&self, steps_begun: u64) -> Result<u64, EdgeError> {
        let head = self.inner.head(steps_begun).await;
        self.count("head", &head);
        if let Ok(block) = head {
            self.monitor.head_read(block);
        }
        head
    }

    async fn observe(&self, block: u64) -> Result<Observation, EdgeError> {
        let observed = self.inner.observe(block).await;
        self.count("observe", &observed);
        observed
    }

    async fn block_hash(&self, block: u64) -> Result<Option<String>, EdgeError> {
        let hash = self.inner.block_hash(block).await;
        self.count("block_hash", &hash);
        hash
    }

    async fn validator_weights(
        &self,
        block: u64,
        stake_min: f32,
    ) -> Result<Option<crate::machine::event::ValidatorWeightsObserved>, EdgeError> {
        let weights = self.inner.validator_weights(block, stake_min).await;
        self.count("validator_weights", &weights);
        weights
    }
}

impl<W: WeightsChain> WeightsChain for Metered<W> {
    async fn standing(&self) -> Result<Standing, EdgeError> {
        let standing = self.inner.standing().await;
        self.count("standing", &standing);
        if let Ok(standing) = &standing {
            self.monitor.head_read(standing.head);
        }
        standing
    }

    async fn plan(&self) -> Result<SubmitMethod, EdgeError> {
        let plan = self.inner.plan().await;
        self.count("plan", &plan);
        plan
    }

    async fn send(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<Sent, ChainRefusal>, EdgeError> {
        let sent = self.inner.send(prepared).await;
        self.count("send_weights", &sent);
        sent
    }

    async fn find_commit(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Option<WeightsCommitted>, EdgeError> {
        let found = self.inner.find_commit(prepared).await;
        self.count("find_commit", &found);
        found
    }

    async fn reveal(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<u64, ChainRefusal>, EdgeError> {
        let revealed = self.inner.reveal(prepared).await;
        self.count("reveal_weights", &revealed);
        revealed
    }

    async fn mechanism_count(&self) -> Result<u8, EdgeError> {
        let count = self.inner.mechanism_count().await;
        self.count("mechanism_count", &count);
        count
    }
}
