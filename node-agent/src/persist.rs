//! State writes off the agent's main loop.
//!
//! Writing `epochs.json` and `ownership.json` ends with two fsyncs; on a slow disk (an
//! EBS hiccup) that takes seconds, and the main loop must keep sending heartbeats
//! meanwhile. [`Persistence`] hands every write to one dedicated thread:
//!
//! * writes are applied in the order they were issued; queued writes of the same record
//!   are coalesced into the newest one (each write carries the whole record, and the
//!   in-memory epochs only grow, so a lower epoch is never written after a higher one);
//! * an activation ([`Action::Activate`]) is started only once every write issued before
//!   it has completed ([`Persistence::gate`] defers it, [`Persistence::completed`]
//!   releases it); the caller then refuses it if one of those writes failed;
//! * deactivations, checks and everything else run at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use baton_core::engine::Action;

use crate::state::{Ownership, StateDir, StateError};

/// Where the records go: the state directory, or a fake in tests.
pub trait StateStore: Send + Sync + 'static {
    fn store_epochs(&self, epochs: &BTreeMap<String, u64>) -> Result<(), StateError>;
    fn store_ownership(&self, ownership: &Ownership) -> Result<(), StateError>;
}

impl StateStore for StateDir {
    fn store_epochs(&self, epochs: &BTreeMap<String, u64>) -> Result<(), StateError> {
        StateDir::store_epochs(self, epochs)
    }
    fn store_ownership(&self, ownership: &Ownership) -> Result<(), StateError> {
        StateDir::store_ownership(self, ownership)
    }
}

/// One record to write (the whole record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Epochs(BTreeMap<String, u64>),
    Ownership(Ownership),
}

/// Results of writes, in issue order: (sequence number, error text if it failed). A
/// write coalesced into a newer one of the same record gets that one's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub results: Vec<(u64, Result<(), String>)>,
}

/// Errors of the persistence worker. `code()` is stable.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot start the state writer thread: {0}")]
    Spawn(std::io::Error),
}

impl PersistError {
    pub fn code(&self) -> &'static str {
        match self {
            PersistError::Spawn(_) => "persist-spawn",
        }
    }
}

/// The writer thread and the activations waiting for it.
pub struct Persistence {
    jobs: Option<mpsc::Sender<(u64, Write)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Sequence number of the last write issued (0: none yet).
    issued: u64,
    /// Every write up to this sequence number has completed.
    done: u64,
    /// Activations waiting for the writes issued before them: (barrier, action).
    deferred: VecDeque<(u64, Action)>,
}

impl Persistence {
    /// Start the writer thread. `notify` receives each batch of results (from that
    /// thread); the owner passes them back to [`Persistence::completed`].
    ///
    /// `delay` (tests only: `BATON_TEST_STATE_DELAY_MS`) stalls every batch, to show that
    /// a slow disk does not hold up the caller.
    pub fn start(
        store: Arc<dyn StateStore>,
        delay: Option<Duration>,
        notify: impl Fn(Done) + Send + 'static,
    ) -> Result<Persistence, PersistError> {
        let (tx, rx) = mpsc::channel::<(u64, Write)>();
        let thread = std::thread::Builder::new()
            .name("baton-state-writer".into())
            .spawn(move || writer(&*store, &rx, delay, &notify))
            .map_err(PersistError::Spawn)?;
        Ok(Persistence {
            jobs: Some(tx),
            thread: Some(thread),
            issued: 0,
            done: 0,
            deferred: VecDeque::new(),
        })
    }

    /// Queue a write; returns its sequence number, or `None` if the writer thread is
    /// gone (the write is lost: the caller treats it as failed). Never blocks.
    pub fn write(&mut self, w: Write) -> Option<u64> {
        self.issued += 1;
        let seq = self.issued;
        let sent = self.jobs.as_ref().is_some_and(|j| j.send((seq, w)).is_ok());
        if sent {
            Some(seq)
        } else {
            // Nothing will ever complete it: nothing may wait for it either.
            self.done = seq;
            None
        }
    }

    /// Writes issued and not yet completed.
    pub fn pending(&self) -> u64 {
        self.issued - self.done
    }

    /// An action that may run now, or `None` if it was deferred: an activation waits for
    /// every write issued before it (and behind activations already waiting).
    pub fn gate(&mut self, a: Action) -> Option<Action> {
        if !matches!(a, Action::Activate { .. }) {
            return Some(a);
        }
        if self.done >= self.issued && self.deferred.is_empty() {
            return Some(a);
        }
        self.deferred.push_back((self.issued, a));
        None
    }

    /// Record completed writes; returns the activations that may now start, in order.
    pub fn completed(&mut self, d: &Done) -> Vec<Action> {
        if let Some(&(last, _)) = d.results.last() {
            self.done = self.done.max(last);
        }
        self.release()
    }

    fn release(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        while self
            .deferred
            .front()
            .is_some_and(|(barrier, _)| *barrier <= self.done)
        {
            if let Some((_, a)) = self.deferred.pop_front() {
                out.push(a);
            }
        }
        out
    }

    /// Stop accepting writes and wait (at most `timeout`) for the queued ones.
    pub fn close(&mut self, timeout: Duration) -> bool {
        self.jobs = None;
        let Some(t) = self.thread.take() else {
            return true;
        };
        let start = crate::clock::now();
        while !t.is_finished() {
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = t.join();
        true
    }
}

fn writer(
    store: &dyn StateStore,
    rx: &mpsc::Receiver<(u64, Write)>,
    delay: Option<Duration>,
    notify: &dyn Fn(Done),
) {
    while let Ok(first) = rx.recv() {
        // Coalesce what is queued: the newest record of each kind wins.
        let mut seqs = vec![(first.0, matches!(first.1, Write::Epochs(_)))];
        let mut epochs = None;
        let mut ownership = None;
        let mut take = |w: Write| match w {
            Write::Epochs(e) => epochs = Some(e),
            Write::Ownership(o) => ownership = Some(o),
        };
        take(first.1);
        while let Ok((seq, w)) = rx.try_recv() {
            seqs.push((seq, matches!(w, Write::Epochs(_))));
            take(w);
        }
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        // Epochs first: the ownership record never names an epoch the epochs file lacks.
        let er = epochs.map(|e| store.store_epochs(&e).map_err(|e| e.to_string()));
        let or = ownership.map(|o| store.store_ownership(&o).map_err(|e| e.to_string()));
        let results = seqs
            .into_iter()
            .map(|(seq, is_epochs)| {
                let r = if is_epochs { &er } else { &or };
                (seq, r.clone().unwrap_or(Ok(())))
            })
            .collect();
        notify(Done { results });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A store whose writes block until the test opens the gate, and which records what
    /// was written, in order.
    #[derive(Default)]
    struct SlowStore {
        open: Mutex<bool>,
        cv: Condvar,
        epochs: Mutex<Vec<BTreeMap<String, u64>>>,
        fail: Mutex<bool>,
    }

    impl SlowStore {
        fn set_open(&self, open: bool) {
            *self.open.lock().unwrap() = open;
            self.cv.notify_all();
        }
        fn wait_open(&self) {
            let mut g = self.open.lock().unwrap();
            while !*g {
                g = self.cv.wait(g).unwrap();
            }
        }
    }

    impl StateStore for SlowStore {
        fn store_epochs(&self, epochs: &BTreeMap<String, u64>) -> Result<(), StateError> {
            self.wait_open();
            if *self.fail.lock().unwrap() {
                return Err(StateError::Io {
                    path: "epochs.json".into(),
                    source: std::io::Error::other("disk gone"),
                });
            }
            self.epochs.lock().unwrap().push(epochs.clone());
            Ok(())
        }
        fn store_ownership(&self, _: &Ownership) -> Result<(), StateError> {
            self.wait_open();
            Ok(())
        }
    }

    fn activate(id: u64, epoch: u64) -> Action {
        Action::Activate {
            id,
            group: "g1".into(),
            resource: "app".into(),
            epoch,
            timeout_ms: 1000,
            attempt: 0,
        }
    }

    fn epochs(e: u64) -> Write {
        Write::Epochs(BTreeMap::from([("g1".to_string(), e)]))
    }

    fn start(store: &Arc<SlowStore>) -> (Persistence, mpsc::Receiver<Done>) {
        let (tx, rx) = mpsc::channel();
        let p = Persistence::start(store.clone(), None, move |d| {
            let _ = tx.send(d);
        })
        .unwrap();
        (p, rx)
    }

    #[test]
    fn an_activation_starts_only_after_the_epoch_write_before_it_completed() {
        let store = Arc::new(SlowStore::default());
        let (mut p, rx) = start(&store);
        // A write that hangs (a slow disk) does not block the caller.
        let seq = p.write(epochs(7)).unwrap();
        assert_eq!(p.pending(), 1);
        assert!(
            p.gate(activate(1, 7)).is_none(),
            "activation ran before its write"
        );
        // Deactivations and checks are not held up.
        let deact = Action::Deactivate {
            id: 2,
            group: "g2".into(),
            resource: "x".into(),
            epoch: 3,
            timeout_ms: 1000,
            attempt: 0,
            fence: false,
        };
        assert_eq!(p.gate(deact.clone()), Some(deact));
        // Nothing has been written yet, so nothing may be released.
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert!(store.epochs.lock().unwrap().is_empty());
        store.set_open(true);
        let done = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(done.results, vec![(seq, Ok(()))]);
        // The write is on "disk" when the activation is released.
        assert_eq!(store.epochs.lock().unwrap().len(), 1);
        assert_eq!(p.completed(&done), vec![activate(1, 7)]);
        assert_eq!(p.pending(), 0);
        // With nothing pending, an activation runs at once.
        assert_eq!(p.gate(activate(3, 7)), Some(activate(3, 7)));
        assert!(p.close(Duration::from_secs(10)));
    }

    #[test]
    fn a_failed_write_is_reported_before_the_activation_is_released() {
        let store = Arc::new(SlowStore::default());
        *store.fail.lock().unwrap() = true;
        let (mut p, rx) = start(&store);
        let seq = p.write(epochs(9)).unwrap();
        assert!(p.gate(activate(1, 9)).is_none());
        store.set_open(true);
        let done = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(done.results.len(), 1);
        assert_eq!(done.results[0].0, seq);
        assert!(done.results[0]
            .1
            .as_ref()
            .unwrap_err()
            .contains("disk gone"));
        assert_eq!(p.completed(&done), vec![activate(1, 9)]);
        assert!(p.close(Duration::from_secs(10)));
    }

    #[test]
    fn activations_wait_in_order_behind_later_writes() {
        let store = Arc::new(SlowStore::default());
        let (mut p, rx) = start(&store);
        let s1 = p.write(epochs(1)).unwrap();
        assert!(p.gate(activate(1, 1)).is_none());
        let s2 = p.write(epochs(2)).unwrap();
        assert!(p.gate(activate(2, 2)).is_none());
        // Only the first write done: only the first activation goes.
        assert_eq!(
            p.completed(&Done {
                results: vec![(s1, Ok(()))]
            }),
            vec![activate(1, 1)]
        );
        assert_eq!(
            p.completed(&Done {
                results: vec![(s2, Ok(()))]
            }),
            vec![activate(2, 2)]
        );
        store.set_open(true);
        // Drain the writer's own reports.
        let mut seen = 0;
        while seen < 2 {
            let d = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            seen += d.results.len();
        }
        assert!(p.close(Duration::from_secs(10)));
    }

    #[test]
    fn coalesced_writes_never_store_a_lower_epoch_after_a_higher_one() {
        let store = Arc::new(SlowStore::default());
        let (mut p, rx) = start(&store);
        let n = 200;
        for e in 1..=n {
            p.write(epochs(e));
            if e == 50 {
                store.set_open(true);
            }
        }
        let mut results = Vec::new();
        while results.len() < usize::try_from(n).unwrap() {
            let d = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            p.completed(&d);
            results.extend(d.results);
        }
        // Every write is answered, in issue order.
        let seqs: Vec<u64> = results.iter().map(|r| r.0).collect();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        assert!(results.iter().all(|r| r.1.is_ok()));
        let written: Vec<u64> = store
            .epochs
            .lock()
            .unwrap()
            .iter()
            .map(|m| m["g1"])
            .collect();
        assert!(written.windows(2).all(|w| w[0] < w[1]), "{written:?}");
        assert_eq!(written.last(), Some(&n));
        assert_eq!(p.pending(), 0);
        assert!(p.close(Duration::from_secs(10)));
    }
}
