//! The timer driver: the only place where the engine's timers meet real time.
//!
//! [`spawn_timer_driver`] runs one task that sleeps until the engine's next deadline — or until
//! the engine signals that an earlier deadline was set — and then calls `advance(now)`: quinn's
//! `drive_timer` shape. Everything that expires (leases, wait timeouts, lock GC, idle REST
//! sessions) is driven from here.

use ldlm_engine::{AdvanceReport, Engine};

use crate::clock::Clock;

/// Spawns the task that drives the engine's timers. `on_report` sees every non-empty
/// [`AdvanceReport`] (for logging, and for REST to forget expired sessions). Abort the returned
/// handle to stop it.
pub fn spawn_timer_driver(
    engine: Engine,
    clock: Clock,
    mut on_report: impl FnMut(AdvanceReport) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let changes = engine.deadline_changes();
        loop {
            let report = engine.advance(clock.now());
            if report != AdvanceReport::default() {
                on_report(report);
            }
            let next = engine.next_deadline();
            let sleep = async {
                match next {
                    Some(deadline) => {
                        // Deadlines are whole milliseconds: wake on or just after the tick.
                        tokio::time::sleep_until(clock.instant_of(deadline).into()).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                _ = changes.recv_async() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldlm_engine::{EngineConfig, LockRequest, TryLockOutcome};
    use std::time::Duration;

    /// A lease set after the driver went to sleep (with nothing else scheduled) still expires
    /// on time: the engine's deadline signal wakes the driver.
    #[tokio::test]
    async fn driver_wakes_for_a_new_earlier_deadline() {
        let clock = Clock::new();
        let config = EngineConfig {
            gc_interval: Duration::ZERO,
            ..EngineConfig::default()
        };
        let engine = Engine::new(config, clock.now()).expect("config");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = spawn_timer_driver(engine.clone(), clock, move |report| {
            let _ = tx.send(report);
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let owner = engine.new_owner();
        let request = LockRequest {
            name: "lease",
            lock_timeout_seconds: Some(1),
            ..LockRequest::default()
        };
        let TryLockOutcome::Acquired(_) = engine
            .try_lock(&owner, &request, clock.now())
            .expect("valid")
        else {
            panic!("a new lock is free");
        };
        let report = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .expect("the lease expires within 3 s")
            .expect("driver alive");
        assert_eq!(report.leases_expired, 1);
        assert!(engine.list().is_empty());
        driver.abort();
    }
}
