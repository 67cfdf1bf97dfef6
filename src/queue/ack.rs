//! Acknowledgement: the tower layer that settles each entry once its handler has finished.
//!
//! apalis wraps this layer (returned by `BackendConfig::middleware`) outside every layer a
//! worker adds, so it sees the final result of each task, after timeouts and caught panics.
//! It decides done / retry / snooze / dead ([`decide`], pure) and hands the decision to the
//! backend's settler, which batches the Redis writes. It must not touch Redis itself: the
//! handler's task is finished when the decision is queued, and the entry stays pending (so it
//! would be redelivered) until the settler has written it.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use apalis_core::{
    error::{AbortError, BoxDynError, RetryAfterError},
    layers::{Layer, Service},
    task::Task,
};

use super::{backend::Inner, error_chain, Delivery, JobError};
use crate::domain::backoff::RetryPolicy;

/// What becomes of an entry after its handler returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Finished: acknowledge and delete.
    Done,
    /// Run again after `delay`. `spend` says whether this counts as an attempt.
    Later {
        delay: Duration,
        spend: bool,
        error: String,
    },
    /// A dead letter, with the reason.
    Dead { error: String },
}

/// Decides an entry's fate from its handler's result. `unit` is a random number in `[0, 1)`
/// for the backoff jitter.
pub fn decide(result: Result<(), &BoxDynError>, attempt: u32, policy: &RetryPolicy, unit: f64) -> Decision {
    let err = match result {
        Ok(()) => return Decision::Done,
        Err(e) => e,
    };
    let message = error_chain(err.as_ref());
    let retry = |delay: Duration, error: String| {
        if policy.may_retry(attempt) {
            Decision::Later {
                delay,
                spend: true,
                error,
            }
        } else {
            Decision::Dead {
                error: format!("gave up after {attempt} attempts: {error}"),
            }
        }
    };
    if let Some(j) = find::<JobError>(err.as_ref()) {
        return match j {
            JobError::Snooze(d) => Decision::Later {
                delay: *d,
                spend: false,
                error: message,
            },
            JobError::Abort(_) => Decision::Dead { error: message },
            JobError::RetryAfter { delay, .. } => retry(*delay, message),
            JobError::Retry(_) => retry(policy.delay(attempt, unit), message),
        };
    }
    if find::<AbortError>(err.as_ref()).is_some() {
        return Decision::Dead { error: message };
    }
    if let Some(r) = find::<RetryAfterError>(err.as_ref()) {
        return retry(r.get_duration(), message);
    }
    retry(policy.delay(attempt, unit), message)
}

/// The first error of type `T` along the `source()` chain.
fn find<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// The layer; one per worker, sharing the backend's state.
#[derive(Clone)]
pub struct AckLayer {
    pub(crate) inner: Arc<Inner>,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AckService {
            shared: self.inner.clone(),
            svc: inner,
        }
    }
}

/// The service [`AckLayer`] wraps around the worker's stack.
#[derive(Clone)]
pub struct AckService<S> {
    shared: Arc<Inner>,
    svc: S,
}

impl<S, Args> Service<Task<Args>> for AckService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.svc.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let delivery = task.data().get::<Delivery>().cloned();
        let fut = self.svc.call(task);
        let shared = self.shared.clone();
        Box::pin(async move {
            let started = Instant::now();
            let res = fut.await.map_err(Into::into);
            if let Some(d) = delivery {
                let outcome = res.as_ref().map(|_| ());
                shared.settle_after_run(d, outcome, started.elapsed());
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            max_attempts: 3,
        }
    }

    fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxDynError {
        Box::new(e)
    }

    #[test]
    fn success_is_done() {
        assert_eq!(decide(Ok(()), 1, &policy(), 0.5), Decision::Done);
    }

    #[test]
    fn plain_errors_retry_with_backoff_then_die() {
        let e: BoxDynError = "timeout".into();
        match decide(Err(&e), 2, &policy(), 1.0) {
            Decision::Later { delay, spend, .. } => {
                assert_eq!(delay, Duration::from_secs(2));
                assert!(spend);
            }
            other => panic!("{other:?}"),
        }
        match decide(Err(&e), 3, &policy(), 1.0) {
            Decision::Dead { error } => {
                assert!(error.contains("gave up after 3 attempts: timeout"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_honours_the_given_delay() {
        let e = boxed(JobError::retry_after(Duration::from_millis(1234), "429"));
        match decide(Err(&e), 1, &policy(), 0.0) {
            Decision::Later { delay, spend, .. } => {
                assert_eq!(delay, Duration::from_millis(1234));
                assert!(spend);
            }
            other => panic!("{other:?}"),
        }
        let e = boxed(RetryAfterError::new("slow down", Duration::from_secs(9)));
        assert!(
            matches!(decide(Err(&e), 1, &policy(), 0.0), Decision::Later { delay, .. } if delay == Duration::from_secs(9))
        );
    }

    #[test]
    fn snooze_spends_no_attempt_even_when_attempts_are_used_up() {
        let e = boxed(JobError::Snooze(Duration::from_secs(60)));
        assert_eq!(
            decide(Err(&e), 3, &policy(), 0.0),
            Decision::Later {
                delay: Duration::from_secs(60),
                spend: false,
                error: "snoozed for 60s".into()
            }
        );
    }

    #[test]
    fn abort_and_caught_panics_die_at_once() {
        let e = boxed(JobError::abort("card declined"));
        assert!(matches!(
            decide(Err(&e), 1, &policy(), 0.0),
            Decision::Dead { .. }
        ));
        let e = boxed(AbortError::new("panicked at handler"));
        assert!(matches!(
            decide(Err(&e), 1, &policy(), 0.0),
            Decision::Dead { .. }
        ));
    }
}
