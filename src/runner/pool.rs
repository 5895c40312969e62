//! A local pool of evaluators, one per device: an evaluation goes to whichever member is free
//! (the stepper dispatches the largest models first and keeps as many in flight as the pool
//! has members). A member whose device cannot be used ([`EdgeError::Device`]) is taken out of
//! the pool for the rest of the run and reported, and the evaluation goes to another member;
//! only when every device is out is the step failed, as the machine's fault.
//!
//! Each member is the usual evaluator (a worker child per model, its timeout, its one retry
//! after a crash), so the pool changes where models run, not how.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::edges::{EdgeError, EvalRequest, Evaluated, ModelEvaluator, TokenizedBatch, Verdict};
use crate::eval::batch::CheckRules;
use crate::eval::batch::ModelChecked;

/// One device's evaluator.
#[derive(Debug)]
struct Member<E> {
    /// The device, for reports.
    label: String,
    /// Its evaluator.
    evaluator: E,
}

/// Which members are free, and which are out.
#[derive(Debug, Default)]
struct Slots {
    /// Free members, longest idle first.
    free: VecDeque<usize>,
    /// Members taken out, with why.
    out: Vec<(usize, String)>,
}

/// A pool of evaluators, one per device.
#[derive(Debug)]
pub struct EvaluatorPool<E> {
    members: Vec<Member<E>>,
    slots: Mutex<Slots>,
    freed: Notify,
}

/// Gives a member back to the pool when its evaluation ends, however it ends (a stopped or
/// failed step drops the evaluation's future).
struct Lease<'a, E> {
    pool: &'a EvaluatorPool<E>,
    member: usize,
    returned: bool,
}

impl<E> Lease<'_, E> {
    /// Takes the member out of the pool instead of giving it back.
    fn retire(mut self, why: String) {
        self.returned = true;
        let label = &self.pool.members[self.member].label;
        tracing::error!(
            "ACTION NEEDED: evaluation device {label} is taken out of the pool for this run: {why}"
        );
        self.pool.lock().out.push((self.member, why));
        self.pool.freed.notify_waiters();
    }
}

impl<E> Drop for Lease<'_, E> {
    fn drop(&mut self) {
        if !self.returned {
            self.pool.lock().free.push_back(self.member);
            self.pool.freed.notify_waiters();
        }
    }
}

impl<E> EvaluatorPool<E> {
    /// A pool of `(device label, evaluator)` members; dispatch starts with the first.
    ///
    /// # Panics
    /// Never: an empty list gives a pool that fails every evaluation as the operator's fault.
    pub fn new(members: Vec<(String, E)>) -> Self {
        let members: Vec<Member<E>> = members
            .into_iter()
            .map(|(label, evaluator)| Member { label, evaluator })
            .collect();
        let slots = Slots {
            free: (0..members.len()).collect(),
            out: Vec::new(),
        };
        Self {
            members,
            slots: Mutex::new(slots),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The devices taken out so far, with why.
    pub fn devices_out(&self) -> Vec<(String, String)> {
        self.lock()
            .out
            .iter()
            .map(|(member, why)| (self.members[*member].label.clone(), why.clone()))
            .collect()
    }

    /// Members still in the pool.
    pub fn devices_in(&self) -> usize {
        self.members.len().saturating_sub(self.lock().out.len())
    }

    /// Waits for a free member; an error when every member is out.
    async fn lease(&self) -> Result<Lease<'_, E>, EdgeError> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a member freed in between still wakes us.
            freed.as_mut().enable();
            {
                let mut slots = self.lock();
                if let Some(member) = slots.free.pop_front() {
                    return Ok(Lease {
                        pool: self,
                        member,
                        returned: false,
                    });
                }
                if slots.out.len() >= self.members.len() {
                    let why: Vec<String> = slots
                        .out
                        .iter()
                        .map(|(member, why)| format!("{}: {why}", self.members[*member].label))
                        .collect();
                    return Err(EdgeError::Operator(if why.is_empty() {
                        "no evaluation device is configured".to_owned()
                    } else {
                        format!(
                            "every evaluation device is out of the pool ({})",
                            why.join("; ")
                        )
                    }));
                }
            }
            freed.await;
        }
    }

    /// A member for work that does not touch the device (checks, tokenising): the first one
    /// still in the pool, or the first one at all.
    fn any_member(&self) -> Option<&E> {
        let slots = self.lock();
        let first_in = (0..self.members.len()).find(|m| !slots.out.iter().any(|(o, _)| o == m));
        first_in
            .or((!self.members.is_empty()).then_some(0))
            .map(|member| &self.members[member].evaluator)
    }
}

fn no_members() -> EdgeError {
    EdgeError::Operator("no evaluation device is configured".to_owned())
}

impl<E: ModelEvaluator> ModelEvaluator for EvaluatorPool<E> {
    async fn check(
        &self,
        dir: &Path,
        rules: &CheckRules,
    ) -> Result<Verdict<ModelChecked>, EdgeError> {
        self.any_member()
            .ok_or_else(no_members)?
            .check(dir, rules)
            .await
    }

    async fn tokenize(
        &self,
        dir: &Path,
        pairs: Arc<[(String, String)]>,
    ) -> Result<Verdict<TokenizedBatch>, EdgeError> {
        self.any_member()
            .ok_or_else(no_members)?
            .tokenize(dir, pairs)
            .await
    }

    async fn evaluate(&self, request: &EvalRequest) -> Result<Evaluated, EdgeError> {
        loop {
            let lease = self.lease().await?;
            let member = &self.members[lease.member];
            match member.evaluator.evaluate(request).await {
                Err(EdgeError::Device(why)) => lease.retire(why),
                other => return other,
            }
        }
    }

    fn capacity(&self) -> usize {
        self.devices_in().max(1)
    }
}
