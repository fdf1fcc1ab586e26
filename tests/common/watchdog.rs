//! Turns a hang into a failure: a test that could deadlock arms a
//! [`Watchdog`] around the part that must return; if it has not been dropped
//! within its time, the whole test binary exits with a message (a stuck
//! thread cannot be unwound, and waiting for it would hang the suite).
//! The time is a deadlock detector, not a synchronisation: nothing waits for
//! it to pass.

use std::io::Write;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

pub struct Watchdog {
    done: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Exits the process with a message naming `what` unless dropped within `seconds`.
    pub fn new(what: &str, seconds: u64) -> Watchdog {
        let (done, armed) = channel::<()>();
        let what = what.to_string();
        let thread = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = armed.recv_timeout(Duration::from_secs(seconds)) {
                // Straight to the descriptor: the test harness captures eprintln!.
                let _ = writeln!(std::io::stderr(), "watchdog: {what}: did not return within {seconds} s (a deadlock, or a wait that never ends)");
                std::process::exit(101);
            }
        });
        Watchdog { done: Some(done), thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Holds the first thread named `thread` that passes the crash point
/// `point` (see `xnncache::fault::set_hook`) until [`Held::release`]: a test
/// acts while xnncache is stopped at an exact step. The hook is removed when
/// the `Held` is dropped.
pub struct Held {
    reached: std::sync::mpsc::Receiver<()>,
    release: Option<Sender<()>>,
}

impl Held {
    pub fn at(point: &'static str, thread: &'static str) -> Held {
        let (reached_tx, reached) = channel::<()>();
        let (release, release_rx) = channel::<()>();
        let (reached_tx, release_rx) = (std::sync::Mutex::new(reached_tx), std::sync::Mutex::new(release_rx));
        xnncache::fault::set_hook(Some(Box::new(move |at| {
            if at == point && std::thread::current().name() == Some(thread) {
                let _ = reached_tx.lock().unwrap().send(());
                let _ = release_rx.lock().unwrap().recv();
            }
        })));
        Held { reached, release: Some(release) }
    }

    /// Waits (at most two minutes, a deadlock detector) until the point is reached.
    pub fn reached(&self, what: &str) {
        self.reached.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("{what}: never reached"));
    }

    /// Lets the held thread go on.
    pub fn release(&mut self) {
        if let Some(r) = self.release.take() {
            let _ = r.send(());
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
        xnncache::fault::set_hook(None);
    }
}
