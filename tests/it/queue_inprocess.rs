//! The queue's contract, with workers in the test process and the real Redis.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use souk::queue::{
    backend::QueueContext, dead, stats, Delivery, JobError, PushOutcome, StreamsBackend, GROUP,
};
use tokio::sync::watch;

use crate::support::{eventually, On, TestEnv};

const Q: &str = "t.probe.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
enum Behaviour {
    Succeed,
    FailAlways,
    FailOnce,
    RetryAfterOnce { ms: u64 },
    SnoozeTimes { times: usize, ms: u64 },
    Abort,
    Panic,
    Sleep { ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Probe {
    id: String,
    #[serde(flatten)]
    behaviour: Behaviour,
}

#[derive(Debug, Clone)]
struct Run {
    id: String,
    attempt: u32,
    job_id: String,
    at: Instant,
}

#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<Run>>>);

impl Runs {
    fn of(&self, id: &str) -> Vec<Run> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.id == id)
            .cloned()
            .collect()
    }
    fn push(&self, r: Run) {
        self.0.lock().unwrap().push(r);
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

async fn probe(p: Probe, d: Data<Delivery>, runs: Data<Runs>) -> Result<(), JobError> {
    let earlier = runs.of(&p.id).len();
    runs.push(Run {
        id: p.id.clone(),
        attempt: d.attempt,
        job_id: d.job_id.clone(),
        at: Instant::now(),
    });
    match p.behaviour {
        Behaviour::Succeed => Ok(()),
        Behaviour::FailAlways => Err(JobError::retry("always fails")),
        Behaviour::FailOnce if earlier == 0 => Err(JobError::retry("first try fails")),
        Behaviour::FailOnce => Ok(()),
        Behaviour::RetryAfterOnce { ms } if earlier == 0 => {
            Err(JobError::retry_after(Duration::from_millis(ms), "429 slow down"))
        }
        Behaviour::RetryAfterOnce { .. } => Ok(()),
        Behaviour::SnoozeTimes { times, ms } if earlier < times => {
            Err(JobError::Snooze(Duration::from_millis(ms)))
        }
        Behaviour::SnoozeTimes { .. } => Ok(()),
        Behaviour::Abort => Err(JobError::abort("card declined")),
        Behaviour::Panic => panic!("handler bug"),
        Behaviour::Sleep { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
    }
}

struct Running {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task");
    }
}

fn start(ctx: QueueContext, runs: Runs) -> Running {
    let (stop, mut rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let s = ctx.settings.clone();
        let name = format!("probe-{}", ctx.consumer);
        Monitor::new()
            .register(move |_| {
                WorkerBuilder::new(name.clone())
                    .backend(StreamsBackend::<Probe>::new(ctx.clone()))
                    .concurrency(s.concurrency)
                    .catch_panic()
                    .data(runs.clone())
                    .build(probe)
            })
            .run_with_signal(async move {
                let _ = rx.changed().await;
                Ok(())
            })
            .await
            .expect("monitor");
    });
    Running { stop, handle }
}

fn p(id: &str, behaviour: Behaviour) -> Probe {
    Probe {
        id: id.to_owned(),
        behaviour,
    }
}

async fn dead_letters(env: &TestEnv) -> Vec<dead::DeadLetter> {
    dead::list(&mut env.redis(), &env.app.producer.keys(Q), 1000)
        .await
        .unwrap()
}

async fn queue_stats(env: &TestEnv) -> stats::QueueStats {
    stats::queue_stats(&mut env.redis(), &env.app.producer.keys(Q))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_poison_entry_is_dead_lettered_while_good_entries_around_it_complete() {
    a_poison_entry_is_dead_lettered_while_good_entries_around_it_complete_on(On::Redis).await
}

#[tokio::test]
async fn cluster_a_poison_entry_is_dead_lettered_while_good_entries_around_it_complete() {
    a_poison_entry_is_dead_lettered_while_good_entries_around_it_complete_on(On::Cluster).await
}

async fn a_poison_entry_is_dead_lettered_while_good_entries_around_it_complete_on(on: On) {
    let env = on.env(&[]).await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    let producer = &env.app.producer;
    for i in 0..10 {
        producer
            .push(Q, &p(&format!("before-{i}"), Behaviour::Succeed))
            .await
            .unwrap();
    }
    producer
        .push_raw(Q, "{\"id\": \"x\", \"do\": \"explode\"")
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&producer.keys(Q).stream)
        .arg("*")
        .arg("body")
        .arg("no payload field")
        .query_async(&mut env.redis())
        .await
        .unwrap();
    for i in 0..10 {
        producer
            .push(Q, &p(&format!("after-{i}"), Behaviour::Succeed))
            .await
            .unwrap();
    }
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(10), "20 good runs and 2 dead letters", || {
        let runs = runs.clone();
        let env = &env;
        async move { runs.len() == 20 && dead_letters(env).await.len() == 2 }
    })
    .await;
    let errors: Vec<String> = dead_letters(&env).await.into_iter().map(|d| d.error).collect();
    assert!(
        errors.iter().any(|e| e.contains("payload does not decode")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("no `payload` field")),
        "{errors:?}"
    );
    w.stop().await;
    let s = queue_stats(&env).await;
    assert_eq!((s.length, s.pending, s.dead), (0, 0, 2));
    env.cleanup().await;
}

#[tokio::test]
async fn a_failing_job_is_retried_with_growing_delays_then_dead_lettered_with_its_error() {
    a_failing_job_is_retried_with_growing_delays_then_dead_lettered_with_its_error_on(On::Redis).await
}

#[tokio::test]
async fn cluster_a_failing_job_is_retried_with_growing_delays_then_dead_lettered_with_its_error() {
    a_failing_job_is_retried_with_growing_delays_then_dead_lettered_with_its_error_on(On::Cluster).await
}

async fn a_failing_job_is_retried_with_growing_delays_then_dead_lettered_with_its_error_on(on: On) {
    let env = on
        .env(&[
            ("SOUK_QUEUE__MAX_ATTEMPTS", "4"),
            ("SOUK_QUEUE__RETRY_BASE_MS", "200"),
        ])
        .await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    env.app
        .producer
        .push(Q, &p("doomed", Behaviour::FailAlways))
        .await
        .unwrap();
    env.app
        .producer
        .push(Q, &p("flaky", Behaviour::FailOnce))
        .await
        .unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(
        Duration::from_secs(15),
        "a dead letter for the doomed job",
        || {
            let env = &env;
            async move { !dead_letters(env).await.is_empty() }
        },
    )
    .await;
    w.stop().await;

    let doomed = runs.of("doomed");
    assert_eq!(
        doomed.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(
        doomed.iter().all(|r| r.job_id == doomed[0].job_id),
        "the job id is stable across retries"
    );
    // Backoff 200 ms · 2^(n-1), jittered to 50–100 %: at least 100, 200, 400 ms apart.
    for (i, pair) in doomed.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let min = Duration::from_millis(100 << i);
        assert!(gap >= min, "gap {i} was {gap:?}, expected at least {min:?}");
    }
    let dl = dead_letters(&env).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].attempts, 4);
    assert!(
        dl[0].error.contains("gave up after 4 attempts: always fails"),
        "{}",
        dl[0].error
    );
    assert!(dl[0].payload.contains("doomed"));

    let flaky = runs.of("flaky");
    assert_eq!(flaky.iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![1, 2]);
    env.cleanup().await;
}

#[tokio::test]
async fn retry_after_waits_the_given_delay_and_spends_an_attempt() {
    let env = TestEnv::new().await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    env.app
        .producer
        .push(Q, &p("limited", Behaviour::RetryAfterOnce { ms: 800 }))
        .await
        .unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(10), "two runs", || {
        let runs = runs.clone();
        async move { runs.of("limited").len() == 2 }
    })
    .await;
    w.stop().await;
    let r = runs.of("limited");
    assert!(
        r[1].at - r[0].at >= Duration::from_millis(800),
        "{:?}",
        r[1].at - r[0].at
    );
    assert_eq!((r[0].attempt, r[1].attempt), (1, 2));
    env.cleanup().await;
}

#[tokio::test]
async fn snooze_comes_back_later_without_spending_an_attempt() {
    // One attempt only: any spent attempt would make the job dead.
    let env = TestEnv::with(&[("SOUK_QUEUE__MAX_ATTEMPTS", "1")]).await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    env.app
        .producer
        .push(Q, &p("sleepy", Behaviour::SnoozeTimes { times: 3, ms: 150 }))
        .await
        .unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(10), "four runs", || {
        let runs = runs.clone();
        async move { runs.of("sleepy").len() == 4 }
    })
    .await;
    w.stop().await;
    let r = runs.of("sleepy");
    assert!(r.iter().all(|x| x.attempt == 1), "{r:?}");
    for pair in r.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_millis(150));
    }
    assert!(dead_letters(&env).await.is_empty());
    let s = queue_stats(&env).await;
    assert_eq!((s.length, s.delayed), (0, 0));
    env.cleanup().await;
}

#[tokio::test]
async fn abort_and_panics_go_straight_to_the_dead_letters_and_the_worker_carries_on() {
    let env = TestEnv::new().await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    env.app
        .producer
        .push(Q, &p("declined", Behaviour::Abort))
        .await
        .unwrap();
    env.app
        .producer
        .push(Q, &p("buggy", Behaviour::Panic))
        .await
        .unwrap();
    env.app
        .producer
        .push(Q, &p("fine", Behaviour::Succeed))
        .await
        .unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(
        Duration::from_secs(10),
        "two dead letters and the good job",
        || {
            let (runs, env) = (runs.clone(), &env);
            async move { dead_letters(env).await.len() == 2 && runs.of("fine").len() == 1 }
        },
    )
    .await;
    // A job after the panic still runs: the worker survived.
    env.app
        .producer
        .push(Q, &p("later", Behaviour::Succeed))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "a job after the panic", || {
        let runs = runs.clone();
        async move { runs.of("later").len() == 1 }
    })
    .await;
    w.stop().await;
    assert_eq!(runs.of("declined").len(), 1);
    assert_eq!(runs.of("buggy").len(), 1);
    let dl = dead_letters(&env).await;
    assert!(dl
        .iter()
        .any(|d| d.error.contains("card declined") && d.attempts == 1));
    assert!(dl.iter().any(|d| d.error.contains("handler bug")), "{dl:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn dead_letters_can_be_retried_by_id_and_purged() {
    dead_letters_can_be_retried_by_id_and_purged_on(On::Redis).await
}

#[tokio::test]
async fn cluster_dead_letters_can_be_retried_by_id_and_purged() {
    dead_letters_can_be_retried_by_id_and_purged_on(On::Cluster).await
}

async fn dead_letters_can_be_retried_by_id_and_purged_on(on: On) {
    let env = on.env(&[("SOUK_QUEUE__MAX_ATTEMPTS", "1")]).await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    env.app
        .producer
        .push(Q, &p("once-broken", Behaviour::FailOnce))
        .await
        .unwrap();
    env.app
        .producer
        .push(Q, &p("hopeless", Behaviour::FailAlways))
        .await
        .unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(10), "two dead letters", || {
        let env = &env;
        async move { dead_letters(env).await.len() == 2 }
    })
    .await;
    let keys = env.app.producer.keys(Q);
    let dl = dead_letters(&env).await;
    let fixable = dl.iter().find(|d| d.payload.contains("once-broken")).unwrap();
    let shown = dead::show(&mut env.redis(), &keys, &fixable.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&shown, fixable);
    assert_eq!(
        dead::retry(&mut env.redis(), &keys, std::slice::from_ref(&fixable.id))
            .await
            .unwrap(),
        1
    );
    eventually(Duration::from_secs(5), "the retried job to succeed", || {
        let runs = runs.clone();
        async move { runs.of("once-broken").len() == 2 }
    })
    .await;
    w.stop().await;
    let left = dead_letters(&env).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].payload.contains("hopeless"));
    assert_eq!(dead::purge(&mut env.redis(), &keys, &[]).await.unwrap(), 1);
    assert!(dead_letters(&env).await.is_empty());
    env.cleanup().await;
}

/// Runs a worker on `Q` until it has made `n` runs, then stops it; the runs it made.
async fn drain(env: &TestEnv, n: usize) -> Runs {
    let ctx = env.app.queue_context(Q).await.unwrap();
    let runs = Runs::default();
    let wk = start(ctx, runs.clone());
    eventually(Duration::from_secs(5), &format!("{n} runs"), || {
        let runs = runs.clone();
        async move { runs.len() == n }
    })
    .await;
    wk.stop().await;
    runs
}

#[tokio::test]
async fn an_idempotent_push_is_a_no_op_the_second_time_and_says_so() {
    an_idempotent_push_is_a_no_op_the_second_time_and_says_so_on(On::Redis).await
}

#[tokio::test]
async fn cluster_an_idempotent_push_is_a_no_op_the_second_time_and_says_so() {
    an_idempotent_push_is_a_no_op_the_second_time_and_says_so_on(On::Cluster).await
}

async fn an_idempotent_push_is_a_no_op_the_second_time_and_says_so_on(on: On) {
    let env = on.env(&[]).await;
    let producer = &env.app.producer;
    producer.declare(Q).await.unwrap();
    let w = Duration::from_secs(60);
    let first = producer
        .push_unique(Q, "order-42", &p("a", Behaviour::Succeed), w, None)
        .await
        .unwrap();
    let second = producer
        .push_unique(Q, "order-42", &p("b", Behaviour::Succeed), w, None)
        .await
        .unwrap();
    let other = producer
        .push_unique(Q, "order-43", &p("c", Behaviour::Succeed), w, None)
        .await
        .unwrap();
    assert_eq!(first, PushOutcome::Pushed("order-42".into()));
    assert_eq!(second, PushOutcome::Duplicate("order-42".into()));
    assert_eq!(other, PushOutcome::Pushed("order-43".into()));
    assert_eq!(queue_stats(&env).await.length, 2);

    let runs = drain(&env, 2).await;
    assert_eq!(
        runs.of("a")[0].job_id,
        "order-42",
        "the idempotency key is the job id"
    );
    assert!(runs.of("b").is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn several_idempotent_pushes_in_one_call_each_keep_their_key() {
    let env = TestEnv::new().await;
    let producer = &env.app.producer;
    producer.declare(Q).await.unwrap();
    let w = Duration::from_secs(60);
    producer
        .push_unique(Q, "order-42", &p("a", Behaviour::Succeed), w, None)
        .await
        .unwrap();
    let later = chrono::Utc::now().timestamp_millis() + 60_000;
    let jobs = vec![
        ("order-42".to_owned(), p("b", Behaviour::Succeed), None),
        ("order-43".to_owned(), p("c", Behaviour::Succeed), None),
        ("order-44".to_owned(), p("d", Behaviour::Succeed), Some(later)),
        ("order-43".to_owned(), p("e", Behaviour::Succeed), None),
    ];
    let pushed = producer.push_unique_many(Q, &jobs, w).await.unwrap();
    let dup = |k: &str| PushOutcome::Duplicate(k.into());
    let new = |k: &str| PushOutcome::Pushed(k.into());
    assert_eq!(
        pushed,
        vec![dup("order-42"), new("order-43"), new("order-44"), dup("order-43")]
    );
    let again = producer.push_unique_many(Q, &jobs[1..3], w).await.unwrap();
    assert_eq!(
        again,
        vec![dup("order-43"), dup("order-44")],
        "a second call pushes nothing"
    );
    let stats = queue_stats(&env).await;
    assert_eq!((stats.length, stats.delayed), (2, 1));

    let runs = drain(&env, 2).await;
    assert_eq!(runs.of("c")[0].job_id, "order-43", "the key is the job id");
    assert!(runs.of("b").is_empty() && runs.of("e").is_empty() && runs.of("d").is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_pushed_for_later_runs_no_sooner_than_asked() {
    a_job_pushed_for_later_runs_no_sooner_than_asked_on(On::Redis).await
}

#[tokio::test]
async fn cluster_a_job_pushed_for_later_runs_no_sooner_than_asked() {
    a_job_pushed_for_later_runs_no_sooner_than_asked_on(On::Cluster).await
}

async fn a_job_pushed_for_later_runs_no_sooner_than_asked_on(on: On) {
    let env = on.env(&[]).await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    let pushed = Instant::now();
    env.app
        .producer
        .push_after(Q, &p("later", Behaviour::Succeed), Duration::from_millis(700))
        .await
        .unwrap();
    assert_eq!(queue_stats(&env).await.delayed, 1);
    eventually(Duration::from_secs(5), "the delayed run", || {
        let runs = runs.clone();
        async move { runs.len() == 1 }
    })
    .await;
    w.stop().await;
    assert!(runs.of("later")[0].at - pushed >= Duration::from_millis(700));
    env.cleanup().await;
}

#[tokio::test]
async fn an_entry_delivered_too_often_without_finishing_becomes_a_dead_letter_unrun() {
    let env = TestEnv::with(&[
        ("SOUK_QUEUE__MAX_DELIVERIES", "3"),
        ("SOUK_QUEUE__CLAIM_IDLE_MS", "300"),
    ])
    .await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    let keys = env.app.producer.keys(Q);
    let id = env
        .app
        .producer
        .push(Q, &p("killer", Behaviour::Succeed))
        .await
        .unwrap();
    // Three consumers took the entry and died with it (as a payload that crashes its process does).
    let mut conn = env.redis();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("crashed-1")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&keys.stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    for c in ["crashed-2", "crashed-3"] {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&keys.stream)
            .arg(GROUP)
            .arg(c)
            .arg(0)
            .arg(&id)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(10), "the dead letter", || {
        let env = &env;
        async move { dead_letters(env).await.len() == 1 }
    })
    .await;
    w.stop().await;
    assert_eq!(runs.len(), 0, "a crash-looping entry is not run a fourth time");
    let dl = dead_letters(&env).await;
    assert!(
        dl[0].error.contains("delivered 3 times without finishing"),
        "{}",
        dl[0].error
    );
    assert_eq!(queue_stats(&env).await.pending, 0);
    env.cleanup().await;
}

/// Pushes the job "orphan" and reads it as a consumer that then dies holding it.
async fn leave_orphan(env: &TestEnv) {
    env.app
        .producer
        .push(Q, &p("orphan", Behaviour::Succeed))
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("died-holding-it")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&env.app.producer.keys(Q).stream)
        .arg(">")
        .query_async(&mut env.redis())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_entry_left_by_a_dead_consumer_is_taken_over_after_the_idle_bound() {
    let env = TestEnv::with(&[("SOUK_QUEUE__CLAIM_IDLE_MS", "600")]).await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    leave_orphan(&env).await;
    let taken = Instant::now();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(10), "the orphan to run", || {
        let runs = runs.clone();
        async move { runs.len() == 1 }
    })
    .await;
    w.stop().await;
    assert!(runs.of("orphan")[0].at - taken >= Duration::from_millis(600));
    assert_eq!(queue_stats(&env).await.pending, 0);
    env.cleanup().await;
}

/// A worker kept busy by a backlog still takes over a dead consumer's entry soon after the
/// idle bound: the entry has waited longest, so it goes before the backlog's next reads.
#[tokio::test]
async fn a_busy_worker_takes_over_a_stale_entry_before_its_backlog_drains() {
    let env = TestEnv::with(&[
        ("SOUK_QUEUE__CLAIM_IDLE_MS", "600"),
        ("SOUK_QUEUE__CONCURRENCY", "2"),
        ("SOUK_QUEUE__BATCH_SIZE", "2"),
    ])
    .await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    leave_orphan(&env).await;
    // 200 jobs of 100 ms on two handlers: a 10 s backlog.
    let backlog: Vec<Probe> = (0..200)
        .map(|i| p(&format!("busy-{i}"), Behaviour::Sleep { ms: 100 }))
        .collect();
    env.app.producer.push_many(Q, &backlog).await.unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(20), "the orphan to run", || {
        let runs = runs.clone();
        async move { !runs.of("orphan").is_empty() }
    })
    .await;
    let done_before = runs.len() - 1;
    assert!(
        done_before < 100,
        "the orphan waited for {done_before} of the 200 backlog jobs: the backlog starved the takeover"
    );
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn running_jobs_keep_their_lease_so_a_second_consumer_never_steals_them() {
    let env = TestEnv::with(&[
        ("SOUK_QUEUE__CLAIM_IDLE_MS", "500"),
        ("SOUK_QUEUE__CONCURRENCY", "4"),
    ])
    .await;
    let mut a = env.app.queue_context(Q).await.unwrap();
    let mut b = a.clone();
    a.consumer = format!("{}-a", a.consumer);
    b.consumer = format!("{}-b", b.consumer);
    for i in 0..6 {
        env.app
            .producer
            .push(Q, &p(&format!("long-{i}"), Behaviour::Sleep { ms: 2_000 }))
            .await
            .unwrap();
    }
    let runs = Runs::default();
    let (wa, wb) = (start(a, runs.clone()), start(b, runs.clone()));
    eventually(Duration::from_secs(20), "six jobs finished", || {
        let env = &env;
        async move {
            let s = queue_stats(env).await;
            s.length == 0 && s.pending == 0
        }
    })
    .await;
    wa.stop().await;
    wb.stop().await;
    assert_eq!(
        runs.len(),
        6,
        "each 2 s job ran once although the idle bound is 0.5 s"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_backlog_of_100_000_entries_drains_completely_and_exactly_once() {
    a_backlog_of_100_000_entries_drains_completely_and_exactly_once_on(On::Redis).await
}

#[tokio::test]
async fn cluster_a_backlog_of_100_000_entries_drains_completely_and_exactly_once() {
    a_backlog_of_100_000_entries_drains_completely_and_exactly_once_on(On::Cluster).await
}

async fn a_backlog_of_100_000_entries_drains_completely_and_exactly_once_on(on: On) {
    let env = on.env(&[]).await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    let jobs: Vec<Probe> = (0..100_000)
        .map(|i| p(&format!("b{i}"), Behaviour::Succeed))
        .collect();
    env.app.producer.push_many(Q, &jobs).await.unwrap();
    assert_eq!(queue_stats(&env).await.length, 100_000);
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    // What is tested is completeness, not speed (that is `souk bench queue`): wait as long as
    // the backlog keeps shrinking, and fail if it stalls for 30 s.
    let (mut last, mut since) = (u64::MAX, std::time::Instant::now());
    loop {
        let len = queue_stats(&env).await.length;
        if len == 0 {
            break;
        }
        if len < last {
            (last, since) = (len, std::time::Instant::now());
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the backlog stalled at {len}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop().await;
    let all: Vec<Run> = runs.0.lock().unwrap().clone();
    assert_eq!(all.len(), 100_000);
    let distinct: std::collections::HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(distinct.len(), 100_000);
    env.cleanup().await;
}

#[tokio::test]
async fn graceful_stop_finishes_running_jobs_and_leaves_nothing_pending() {
    let env = TestEnv::with(&[("SOUK_QUEUE__CONCURRENCY", "5"), ("SOUK_QUEUE__BATCH_SIZE", "10")]).await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    let jobs: Vec<Probe> = (0..40)
        .map(|i| p(&format!("s{i}"), Behaviour::Sleep { ms: 400 }))
        .collect();
    env.app.producer.push_many(Q, &jobs).await.unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(5), "the first jobs to start", || {
        let runs = runs.clone();
        async move { runs.len() >= 5 }
    })
    .await;
    w.stop().await;
    let started = runs.len();
    let s = queue_stats(&env).await;
    assert_eq!(s.pending, 0, "nothing left pending after a graceful stop");
    assert_eq!(
        s.length as usize,
        40 - started,
        "unstarted jobs (prefetched ones too) are back on the stream"
    );
    assert!(
        s.consumers.is_empty(),
        "the consumer left the group: {:?}",
        s.consumers
    );
    env.cleanup().await;
}

#[tokio::test]
async fn queue_stats_show_waiting_pending_delayed_and_dead() {
    queue_stats_show_waiting_pending_delayed_and_dead_on(On::Redis).await
}

#[tokio::test]
async fn cluster_queue_stats_show_waiting_pending_delayed_and_dead() {
    queue_stats_show_waiting_pending_delayed_and_dead_on(On::Cluster).await
}

async fn queue_stats_show_waiting_pending_delayed_and_dead_on(on: On) {
    let env = on.env(&[]).await;
    let producer = &env.app.producer;
    producer.declare(Q).await.unwrap();
    for i in 0..3 {
        producer
            .push(Q, &p(&format!("w{i}"), Behaviour::Succeed))
            .await
            .unwrap();
    }
    producer
        .push_after(Q, &p("d", Behaviour::Succeed), Duration::from_secs(600))
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("someone")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&producer.keys(Q).stream)
        .arg(">")
        .query_async(&mut env.redis())
        .await
        .unwrap();
    let s = queue_stats(&env).await;
    assert_eq!(
        (s.length, s.waiting, s.pending, s.delayed, s.dead),
        (3, 2, 1, 1, 0)
    );
    assert_eq!(s.consumers.len(), 1);
    assert_eq!(
        (s.consumers[0].name.as_str(), s.consumers[0].pending),
        ("someone", 1)
    );
    assert!(s.oldest_age_s.is_some());
    let names = stats::queue_names(&mut env.redis(), &env.prefix).await.unwrap();
    assert_eq!(names, vec![Q.to_owned()]);
    env.cleanup().await;
}

#[tokio::test]
async fn handlers_learn_the_delivery_they_run() {
    let env = TestEnv::new().await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    let entry = env
        .app
        .producer
        .push(Q, &p("who", Behaviour::Succeed))
        .await
        .unwrap();
    let runs = Runs::default();
    let w = start(ctx, runs.clone());
    eventually(Duration::from_secs(5), "one run", || {
        let runs = runs.clone();
        async move { runs.len() == 1 }
    })
    .await;
    w.stop().await;
    let r = &runs.of("who")[0];
    assert_eq!(
        r.job_id, entry,
        "without a job_id field the entry id is the job id"
    );
    assert_eq!(r.attempt, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn the_fleet_wide_rate_limiter_admits_its_limit_per_sliding_second() {
    let env = TestEnv::new().await;
    let key = format!("{}:ratelimit:test", env.prefix);
    let mut conn = env.redis();
    let mut admitted = 0;
    let mut waits = Vec::new();
    for _ in 0..8 {
        match souk::queue::limiter::take(&mut conn, &key, 5).await.unwrap() {
            Ok(()) => admitted += 1,
            Err(w) => waits.push(w),
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(waits.len(), 3);
    assert!(
        waits
            .iter()
            .all(|w| *w > Duration::ZERO && *w <= Duration::from_millis(1000)),
        "{waits:?}"
    );
    tokio::time::sleep(waits[0] + Duration::from_millis(20)).await;
    assert!(
        souk::queue::limiter::take(&mut conn, &key, 5)
            .await
            .unwrap()
            .is_ok(),
        "a slot freed up"
    );
    env.cleanup().await;
}

/// A master failover mid-run, with `redis.wait_replicas = 1`: the master holding the queue is
/// killed with SIGKILL while jobs are pushed and run, its replica takes over, and the killed
/// node comes back as the new master's replica. Every push that was acknowledged runs; pushes
/// made while the new master had no replica are refused, not acknowledged and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_master_failover_loses_no_acknowledged_push() {
    use crate::support::cluster::{self, RedisCluster};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use tokio::task::block_in_place;

    let mut c = block_in_place(|| RedisCluster::start(3));
    let vars = cluster::settings(&c);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let env = TestEnv::with(&vars).await;
    let ctx = env.app.queue_context(Q).await.unwrap();
    let stream = env.app.producer.keys(Q).stream;
    let runs = Runs::default();
    let w = start(ctx, runs.clone());

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (producer, acked, refused, stop) = (
            env.app.producer.clone(),
            acked.clone(),
            refused.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                let id = format!("f{i}");
                i += 1;
                match producer.push(Q, &p(&id, Behaviour::Succeed)).await {
                    Ok(_) => acked.lock().unwrap().push(id),
                    Err(_) => {
                        refused.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let acked_len = || acked.lock().unwrap().len();
    eventually(Duration::from_secs(20), "200 acknowledged pushes", || async {
        acked_len() >= 200
    })
    .await;

    let old = block_in_place(|| c.master_of(&stream));
    block_in_place(|| c.kill(old));
    eventually(
        Duration::from_secs(30),
        "a replica promoted for the queue's slot",
        || {
            let promoted = block_in_place(|| c.try_master_of(&stream)).is_some_and(|m| m != old);
            async move { promoted }
        },
    )
    .await;
    let at_promotion = acked_len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    block_in_place(|| {
        c.restart(old);
        c.wait_healthy();
    });
    eventually(
        Duration::from_secs(30),
        "200 more pushes acknowledged after the failover",
        || async { acked_len() >= at_promotion + 200 },
    )
    .await;
    stop.store(true, Relaxed);
    pusher.await.unwrap();

    let want: std::collections::HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    eventually(Duration::from_secs(30), "every acknowledged push ran", || {
        let ran: std::collections::HashSet<String> =
            runs.0.lock().unwrap().iter().map(|r| r.id.clone()).collect();
        let missing = want.difference(&ran).count();
        async move { missing == 0 }
    })
    .await;
    assert!(
        refused.load(Relaxed) > 0,
        "while the promoted master had no replica, WAIT 1 refused to acknowledge pushes"
    );
    w.stop().await;
    env.cleanup().await;
    drop(c);
}
