//! Waiting on a condition with a deadline: the only way tests wait for etcd (no fixed sleeps).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A condition that did not hold before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("gave up waiting for {what} after {waited:?} ({attempts} attempts); last: {last}")]
pub struct WaitTimeout {
    pub what: String,
    pub waited: Duration,
    pub attempts: u32,
    /// `Debug` of the last attempt's error, for the test log.
    pub last: String,
}

/// Calls `attempt` until it returns `Ok`, pausing briefly (20 ms doubling to 250 ms) between
/// tries, and gives up `within` from now. An attempt still running at the deadline is
/// dropped. `what` names the condition in the error.
///
/// ```ignore
/// let status = wait_for(Duration::from_secs(10), "learner caught up", || async {
///     let s = admin.status(&url).await?;
///     if s.raft_applied_index >= target { Ok(s) } else { Err(Lagging(s.raft_applied_index)) }
/// }).await?;
/// ```
pub async fn wait_for<T, E, F, Fut>(
    within: Duration,
    what: &str,
    mut attempt: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: fmt::Debug,
{
    let started = Instant::now();
    let deadline = started + within;
    let mut pause = Duration::from_millis(20);
    let mut attempts = 0;
    let mut last = String::from("no attempt finished");
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => last = format!("{e:?}"),
            Err(_) => break,
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
    Err(WaitTimeout {
        what: what.to_owned(),
        waited: started.elapsed(),
        attempts,
        last,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_first_success() {
        let calls = AtomicU32::new(0);
        let got = wait_for(Duration::from_secs(5), "third call", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                n if n >= 2 => Ok(n),
                n => Err(n),
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 2);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_with_the_last_error() {
        let started = std::time::Instant::now();
        let err = wait_for(Duration::from_millis(150), "never", || async {
            Err::<(), _>("still not")
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(err.what, "never");
        assert!(err.last.contains("still not"), "{err}");
        assert!(err.attempts >= 2);
    }

    #[tokio::test]
    async fn an_attempt_that_hangs_is_cut_at_the_deadline() {
        let err = wait_for(Duration::from_millis(100), "hang", || async {
            std::future::pending::<Result<(), ()>>().await
        })
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 1);
    }
}
