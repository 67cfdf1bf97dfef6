//! Message groups on a queue of their own (`src/queue/groups.rs`), with two backends reading
//! it at concurrency 20 each: entries of one group run one at a time in stream order; a
//! retried or snoozed head keeps its place; a dead head releases its group; nothing is left.

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use souk::queue::{backend::QueueContext, groups::GroupRule, JobError, StreamsBackend};
use tokio::sync::watch;

use crate::support::{eventually, TestEnv};

const Q: &str = "t.grouped.v1";

/// One group per `group` field; several when `also` is set.
static RULE: LazyLock<GroupRule> = LazyLock::new(|| {
    GroupRule::new(
        r#"
local function group_keys(payload)
  local c = cjson.decode(payload)
  local k = {c.group}
  if c.also then k[#k + 1] = c.also end
  return k
end
"#,
    )
});

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    also: Option<String>,
    seq: usize,
    /// Position in the stream.
    #[serde(default)]
    n: usize,
    /// "ok", "fail_once", "snooze_twice", "abort"
    act: String,
    ms: u64,
}

#[derive(Debug, Clone)]
struct Run {
    group: String,
    also: Option<String>,
    seq: usize,
    n: usize,
    start: Instant,
    end: Instant,
}

#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<Run>>>);

async fn handle(j: Job, runs: Data<Runs>) -> Result<(), JobError> {
    let start = Instant::now();
    let runs: &Runs = &runs;
    let earlier = runs
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.group == j.group && r.seq == j.seq)
        .count();
    tokio::time::sleep(Duration::from_millis(j.ms)).await;
    runs.0.lock().unwrap().push(Run {
        group: j.group.clone(),
        also: j.also.clone(),
        seq: j.seq,
        n: j.n,
        start,
        end: Instant::now(),
    });
    match j.act.as_str() {
        "fail_once" if earlier == 0 => Err(JobError::retry("first try fails")),
        "snooze_twice" if earlier < 2 => Err(JobError::Snooze(Duration::from_millis(30))),
        "abort" => Err(JobError::abort("refused for good")),
        _ => Ok(()),
    }
}

fn start(ctx: QueueContext, runs: Runs) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, mut rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let name = format!("grouped-{}", ctx.consumer);
        Monitor::new()
            .register(move |_| {
                WorkerBuilder::new(name.clone())
                    .backend(StreamsBackend::<Job>::new(ctx.clone()).grouped(&RULE))
                    .concurrency(20)
                    .data(runs.clone())
                    .build(handle)
            })
            .run_with_signal(async move {
                let _ = rx.changed().await;
                Ok(())
            })
            .await
            .expect("monitor");
    });
    (stop, handle)
}

fn job(group: &str, seq: usize, act: &str, ms: u64) -> Job {
    Job {
        group: group.to_owned(),
        also: None,
        seq,
        n: 0,
        act: act.to_owned(),
        ms,
    }
}

#[tokio::test]
async fn entries_of_one_group_run_one_at_a_time_in_stream_order_and_groups_run_in_parallel() {
    let env = TestEnv::new().await;
    let mut ctx_a = env.app.queue_context(Q).await.unwrap();
    ctx_a.consumer = format!("{}-a", ctx_a.consumer);
    let mut ctx_b = ctx_a.clone();
    ctx_b.consumer = format!("{}-b", ctx_b.consumer);
    let mut jobs = Vec::new();
    for seq in 0..8 {
        for g in 0..10 {
            let act = match (g, seq) {
                (0, 2) => "fail_once",
                (1, 3) => "snooze_twice",
                (2, 1) => "abort",
                _ => "ok",
            };
            jobs.push(job(&format!("g{g}"), seq, act, fastrand::u64(1..15)));
        }
        // Two groups at once: runs after every earlier entry of g3 and of g4.
        let mut both = job("g3", 100 + seq, "ok", 2);
        both.also = Some("g4".to_owned());
        jobs.push(both);
    }
    for (n, j) in jobs.iter_mut().enumerate() {
        j.n = n;
        env.app.producer.push(Q, j).await.unwrap();
    }
    let runs = Runs::default();
    let (stop_a, a) = start(ctx_a, runs.clone());
    let (stop_b, b) = start(ctx_b, runs.clone());
    // 88 entries, plus one rerun for fail_once and two for snooze_twice.
    let total = jobs.len() + 3;
    eventually(Duration::from_secs(30), "every entry ran", || {
        let n = runs.0.lock().unwrap().len();
        async move { n == total }
    })
    .await;
    let runs = runs.0.lock().unwrap().clone();
    for g in 0..10 {
        let name = format!("g{g}");
        let mine: Vec<&Run> = {
            let mut v: Vec<&Run> = runs
                .iter()
                .filter(|r| r.group == name || r.also.as_deref() == Some(name.as_str()))
                .collect();
            v.sort_by_key(|r| r.start);
            v
        };
        let order: Vec<usize> = mine.iter().map(|r| r.n).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "group {name} ran out of order");
        for w in mine.windows(2) {
            assert!(w[1].start >= w[0].end, "two entries of {name} overlapped");
        }
    }
    let first = runs.iter().map(|r| r.start).min().unwrap();
    let last = runs.iter().map(|r| r.end).max().unwrap();
    let busy: Duration = runs.iter().map(|r| r.end - r.start).sum();
    assert!(
        busy > (last - first) * 2,
        "groups did not run in parallel: {busy:?} of work in {:?}",
        last - first
    );
    let keys = env.app.producer.keys(Q);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", keys.group_prefix))
        .query_async(&mut env.redis())
        .await
        .unwrap();
    assert_eq!(left, Vec::<String>::new(), "a group list was left behind");
    let (gk, held): (u64, u64) = redis::pipe()
        .cmd("HLEN")
        .arg(&keys.gkeys)
        .cmd("HLEN")
        .arg(&keys.held)
        .query_async(&mut env.redis())
        .await
        .unwrap();
    assert_eq!((gk, held), (0, 0));
    let dead: u64 = redis::cmd("HLEN")
        .arg(&keys.dead)
        .query_async(&mut env.redis())
        .await
        .unwrap();
    assert_eq!(
        dead, 1,
        "the aborted head is a dead letter and released its group"
    );
    let _ = stop_a.send(true);
    let _ = stop_b.send(true);
    let _ = tokio::join!(a, b);
    env.cleanup().await;
}
