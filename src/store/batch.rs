//! Group commit: many handlers' writes of one kind run as one set-based transaction.
//!
//! A handler still runs per job (its own retries, acks and dead letter), but instead of
//! writing alone it hands its request to a [`Batcher`] and waits. The batcher's task takes
//! whatever requests are waiting (up to `max`), runs them through one batch function (a
//! handful of statements over arrays, one commit), and answers each waiter. While one batch
//! runs, the next one fills, so under load a round trip and a commit serve dozens of jobs, and
//! when idle a lone request runs at once (no timer, no added latency).
//!
//! Why this keeps the guarantees: a batch function is written so that running it again with
//! any of its requests changes nothing more (compare-and-set updates, `ON CONFLICT DO
//! NOTHING`), exactly like the per-job code it replaces; a job whose batch failed is retried
//! alone by the queue. When a batch fails, its requests are run again one by one before anyone
//! is answered, so one bad request (a constraint it breaks) fails only its own job and never
//! the others that happened to share its batch.
//!
//! The batcher must not hold anything across batches: each batch is independent, and the
//! task ends when the last sender (the `App`) is dropped.

use std::{future::Future, pin::Pin, sync::Arc};

use tokio::sync::{mpsc, oneshot};

type Reply<R> = oneshot::Sender<Result<R, sqlx::Error>>;
type BatchFn<Q, R> =
    dyn Fn(Arc<[Q]>) -> Pin<Box<dyn Future<Output = Result<Vec<R>, sqlx::Error>> + Send>> + Send + Sync;

/// Collects requests of one kind and runs them in batches (see the module docs).
pub struct Batcher<Q, R> {
    tx: mpsc::UnboundedSender<(Q, Reply<R>)>,
}

impl<Q: Clone + Send + Sync + 'static, R: Send + 'static> Batcher<Q, R> {
    /// Starts the batch task. `run` gets up to `max` requests (shared, not copied: a failed
    /// batch runs them again one by one) and must answer each, in order.
    pub fn spawn<F, Fut>(name: &'static str, max: usize, run: F) -> Self
    where
        F: Fn(Arc<[Q]>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, sqlx::Error>> + Send + 'static,
    {
        let run: Arc<BatchFn<Q, R>> = Arc::new(move |qs| Box::pin(run(qs)));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(name, max.max(1), rx, run));
        Self { tx }
    }

    /// Runs `req` in the next batch and returns its answer.
    pub async fn call(&self, req: Q) -> Result<R, sqlx::Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((req, tx)).map_err(|_| sqlx::Error::PoolClosed)?;
        rx.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn batch_loop<Q: Clone, R>(
    name: &'static str,
    max: usize,
    mut rx: mpsc::UnboundedReceiver<(Q, Reply<R>)>,
    run: Arc<BatchFn<Q, R>>,
) {
    let mut buf = Vec::with_capacity(max);
    while rx.recv_many(&mut buf, max).await > 0 {
        let (reqs, replies): (Vec<Q>, Vec<Reply<R>>) = buf.drain(..).unzip();
        let n = reqs.len();
        let reqs: Arc<[Q]> = reqs.into();
        let started = std::time::Instant::now();
        let result = run(reqs.clone()).await;
        tracing::debug!(
            batch = name,
            requests = n,
            ms = started.elapsed().as_secs_f64() * 1e3,
            ok = result.is_ok(),
            "batch ran"
        );
        match result {
            Ok(answers) if answers.len() == n => {
                for (reply, a) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(a));
                }
            }
            Ok(answers) => {
                let why = format!("batch {name} answered {} of {n} requests", answers.len());
                for reply in replies {
                    let _ = reply.send(Err(sqlx::Error::Protocol(why.clone())));
                }
            }
            Err(e) if n == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
            }
            Err(e) => {
                // Isolate the request that broke the batch: each runs again on its own.
                tracing::warn!(batch = name, requests = n, error = %e, "batch failed; running its requests one by one");
                for (i, reply) in replies.into_iter().enumerate() {
                    let one = run(Arc::from([reqs[i].clone()])).await.and_then(|mut a| {
                        a.pop()
                            .ok_or_else(|| sqlx::Error::Protocol(format!("batch {name} gave no answer")))
                    });
                    let _ = reply.send(one);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_waiting_together_share_a_batch_and_a_bad_one_fails_alone() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b = Arc::new(Batcher::spawn("test", 64, move |qs: Arc<[i64]>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(qs.len());
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                if qs.contains(&13) {
                    return Err(sqlx::Error::Protocol("thirteen".into()));
                }
                Ok(qs.iter().map(|q| q * 2).collect::<Vec<i64>>())
            }
        }));
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i).await })
            })
            .collect();
        let mut ok = 0;
        for (i, c) in calls.into_iter().enumerate() {
            match c.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, i as i64 * 2);
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(i, 13, "only the bad request fails: {e}");
                }
            }
        }
        assert_eq!(ok, 39);
        let sizes = sizes.lock().unwrap().clone();
        // 40 requests arrive while the first runs: far fewer batches than requests.
        assert!(sizes.iter().copied().max().unwrap_or(0) >= 10, "{sizes:?}");
    }
}
