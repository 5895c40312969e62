//! The one writer. A thread owns the [`Recorder`]: every part of the runner sends it events,
//! it journals them (one atomic, flushed append per request), folds them, and publishes the
//! folded state. Everything else acts only on states it has published, so nothing acts on an
//! event a crash could take back.
//!
//! A record's block is when it was journaled: an event sent with a block lower than the
//! journal's last (a model verified while a later step began) is stamped with the last block,
//! so the journal's order holds whatever the tasks' timing.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::journal::head::Head;
use crate::journal::recorder::Recorder;
use crate::journal::{Journal, JournalError};
use crate::machine::event::{BatchFetched, TasksFetched};
use crate::machine::preview::observation_news;
use crate::machine::{Event, Outcome, Position, Record, State};

/// Who hears what the writer journals: told of the journal once it is open, then of each
/// write once it is flushed and folded. The writer publishes; it names no consumer (the
/// monitor is one).
pub trait Subscriber: Send + Sync {
    /// The journal as opened, and the state it folds to.
    fn opened(&self, journal: &Journal, state: &State) -> Result<(), JournalError>;

    /// One write: each record with the fold's outcome, the state after it, and the journal's
    /// head after it.
    fn written(&self, written: &[(Record, Outcome)], state: Arc<State>, head: Option<&Head>);
}

/// What one request wrote: each record with the fold's outcome.
pub type Written = Vec<(Record, Outcome)>;

enum Request {
    Record {
        events: Vec<(u64, Event)>,
        reply: oneshot::Sender<Result<Written, JournalError>>,
    },
    Observe {
        block: u64,
        before: Vec<Event>,
        observed: Vec<Event>,
        after: Vec<Event>,
        reply: oneshot::Sender<Result<Written, JournalError>>,
    },
    FindBatch {
        step: u64,
        from_block: u64,
        reply: oneshot::Sender<Result<Option<Event>, JournalError>>,
    },
    RecordFromState {
        make: EventsFromState,
        reply: oneshot::Sender<Result<Written, JournalError>>,
    },
}

/// Events computed from the state as the writer holds it, in the writer: nothing can be folded
/// between reading the state and journaling what was derived from it.
pub type EventsFromState = Box<dyn FnOnce(&State) -> Vec<(u64, Event)> + Send>;

/// Why a request to the writer failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The journal refused the write or could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The writer is gone (it stopped after an earlier error).
    #[error("the journal writer has stopped")]
    Stopped,
}

/// A cloneable handle to the writer: send events, read the folded state.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    requests: mpsc::Sender<Request>,
    state: watch::Receiver<Arc<State>>,
}

/// The writer thread and its handle.
#[derive(Debug)]
pub struct Writer {
    handle: WriterHandle,
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Record { .. } => "Record",
            Request::Observe { .. } => "Observe",
            Request::FindBatch { .. } => "FindBatch",
            Request::RecordFromState { .. } => "RecordFromState",
        })
    }
}

impl Writer {
    /// Opens the journal at `path` (folding it from its latest checkpoint) and starts the
    /// writer thread. A journal another process holds, or of another schema, is refused here.
    pub fn open(path: &Path, checkpoint_every_steps: u64) -> Result<Self, JournalError> {
        Self::open_published(path, checkpoint_every_steps, Vec::new())
    }

    /// As [`Writer::open`], telling each of `subscribers` of the journal as opened, now, then
    /// of each write as it is folded.
    pub fn open_published(
        path: &Path,
        checkpoint_every_steps: u64,
        subscribers: Vec<Arc<dyn Subscriber>>,
    ) -> Result<Self, JournalError> {
        let recorder = Recorder::open(path, checkpoint_every_steps)?;
        for subscriber in &subscribers {
            subscriber.opened(recorder.journal(), recorder.state())?;
        }
        let (state_sender, state) = watch::channel(Arc::new(recorder.state().clone()));
        let (requests, receiver) = mpsc::channel(64);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || serve(recorder, receiver, &state_sender, &subscribers))
            .map_err(|source| JournalError::Storage {
                path: path.to_owned(),
                source: sled::Error::Io(source),
            })?;
        Ok(Self {
            handle: WriterHandle { requests, state },
            thread,
        })
    }

    /// A handle for a task.
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Waits for every request sent so far to be written, then closes the journal. Every
    /// handle must be dropped first, or this waits for them.
    pub fn close(self) {
        drop(self.handle);
        // The thread ends once the last sender is gone; a panic there already reported itself.
        let _ = self.thread.join();
    }
}

fn serve(
    mut recorder: Recorder,
    mut requests: mpsc::Receiver<Request>,
    state: &watch::Sender<Arc<State>>,
    subscribers: &[Arc<dyn Subscriber>],
) {
    let write = |recorder: &mut Recorder, events| {
        let written = write(recorder, events, state);
        if let Ok(written) = &written {
            let folded = state.borrow().clone();
            for subscriber in subscribers {
                subscriber.written(written, folded.clone(), recorder.journal().head());
            }
        }
        written
    };
    while let Some(request) = requests.blocking_recv() {
        match request {
            Request::Record { events, reply } => {
                let written = write(&mut recorder, events);
                let _ = reply.send(written);
            }
            Request::Observe {
                block,
                before,
                observed,
                after,
                reply,
            } => {
                let news = observation_news(recorder.state(), &observed);
                let events = before
                    .into_iter()
                    .chain(news)
                    .chain(after)
                    .map(|event| (block, event))
                    .collect();
                let written = write(&mut recorder, events);
                let _ = reply.send(written);
            }
            Request::FindBatch {
                step,
                from_block,
                reply,
            } => {
                let _ = reply.send(find_batch(&recorder, step, from_block));
            }
            Request::RecordFromState { make, reply } => {
                let events = make(recorder.state());
                let written = write(&mut recorder, events);
                let _ = reply.send(written);
            }
        }
    }
}

fn write(
    recorder: &mut Recorder,
    events: Vec<(u64, Event)>,
    state: &watch::Sender<Arc<State>>,
) -> Result<Written, JournalError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let written = recorder.record_in_order(events)?;
    state.send_replace(Arc::new(recorder.state().clone()));
    Ok(written)
}

/// The step's data as journaled: N's `BatchFetched` or the successor's `TasksFetched`.
fn find_batch(
    recorder: &Recorder,
    step: u64,
    from_block: u64,
) -> Result<Option<Event>, JournalError> {
    let from = Position {
        block: from_block,
        seq: 0,
    };
    for record in recorder.journal().records(from, None) {
        let event = record?.event;
        let of_step = match &event {
            Event::BatchFetched(batch) => batch.step == step,
            Event::TasksFetched(tasks) => tasks.step == step,
            _ => false,
        };
        if of_step {
            return Ok(Some(event));
        }
    }
    Ok(None)
}

impl WriterHandle {
    /// The state as last folded.
    pub fn state(&self) -> Arc<State> {
        self.state.borrow().clone()
    }

    /// A receiver that wakes whenever a new state is folded.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.state.clone()
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Request,
    ) -> Result<T, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(request(reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        Ok(answer.await.map_err(|_| WriteError::Stopped)??)
    }

    /// Journals `events` in one atomic, flushed append, then folds them.
    pub async fn record(&self, events: Vec<(u64, Event)>) -> Result<Written, WriteError> {
        self.ask(|reply| Request::Record { events, reply }).await
    }

    /// Journals what `make` derives from the state as the writer holds it (nothing is folded in
    /// between), in one atomic, flushed append.
    pub async fn record_from_state(
        &self,
        make: impl FnOnce(&State) -> Vec<(u64, Event)> + Send + 'static,
    ) -> Result<Written, WriteError> {
        let make: EventsFromState = Box::new(make);
        self.ask(|reply| Request::RecordFromState { make, reply })
            .await
    }

    /// Journals, in one atomic append at `block`: `before`, then what of `observed` would
    /// change the state (compared in the writer, so two tasks never journal the same news),
    /// then `after`.
    pub async fn observe(
        &self,
        block: u64,
        before: Vec<Event>,
        observed: Vec<Event>,
        after: Vec<Event>,
    ) -> Result<Written, WriteError> {
        self.ask(|reply| Request::Observe {
            block,
            before,
            observed,
            after,
            reply,
        })
        .await
    }

    /// The journaled batch of `step`, searched from `from_block` (the step's start).
    pub async fn batch_of(
        &self,
        step: u64,
        from_block: u64,
    ) -> Result<Option<BatchFetched>, WriteError> {
        Ok(match self.step_data(step, from_block).await? {
            Some(Event::BatchFetched(batch)) => Some(batch),
            _ => None,
        })
    }

    /// The journaled tasks of a successor step, searched from `from_block` (its start).
    pub async fn tasks_of(
        &self,
        step: u64,
        from_block: u64,
    ) -> Result<Option<TasksFetched>, WriteError> {
        Ok(match self.step_data(step, from_block).await? {
            Some(Event::TasksFetched(tasks)) => Some(tasks),
            _ => None,
        })
    }

    /// The journaled data of `step` (its `BatchFetched` or `TasksFetched`), searched from
    /// `from_block`.
    async fn step_data(&self, step: u64, from_block: u64) -> Result<Option<Event>, WriteError> {
        self.ask(|reply| Request::FindBatch {
            step,
            from_block,
            reply,
        })
        .await
    }
}
