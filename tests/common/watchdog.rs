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
