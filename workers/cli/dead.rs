//! `souk dead …`: list, show, retry and purge dead letters.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum DeadAction {
    /// List dead letters, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full.
    Show {
        id: String,
        #[arg(long)]
        queue: Option<String>,
    },
    /// Put dead letters back on their queue: by id, a whole queue (--queue), or all (--all).
    Retry {
        ids: Vec<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters: by id, a whole queue (--queue), or all (--all).
    Purge {
        ids: Vec<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

pub(crate) async fn dead_command(config: &Config, action: DeadAction) -> anyhow::Result<()> {
    let mut conn = redis_conn(config).await?;
    let prefix = &config.redis.key_prefix;
    let queues = |only: &Option<String>| {
        let only = only.clone();
        let prefix = prefix.clone();
        let mut conn = conn.clone();
        async move {
            match only {
                Some(q) => Ok::<_, anyhow::Error>(vec![q]),
                None => Ok(stats::queue_names(&mut conn, &prefix).await?),
            }
        }
    };
    match action {
        DeadAction::List { queue, limit, json } => {
            let mut all = Vec::new();
            for q in queues(&queue).await? {
                all.extend(dead::list(&mut conn, &QueueKeys::new(prefix, &q), limit).await?);
            }
            all.sort_by_key(|d| std::cmp::Reverse(d.died_at));
            all.truncate(limit);
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no dead letters");
            } else {
                for d in all {
                    let when = chrono::DateTime::from_timestamp_millis(d.died_at)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    println!(
                        "{}  {}  {}  attempts={}  {}",
                        d.queue, d.id, when, d.attempts, d.error
                    );
                }
            }
        }
        DeadAction::Show { id, queue } => {
            for q in queues(&queue).await? {
                if let Some(d) = dead::show(&mut conn, &QueueKeys::new(prefix, &q), &id).await? {
                    println!("{}", serde_json::to_string_pretty(&d)?);
                    return Ok(());
                }
            }
            anyhow::bail!("no dead letter {id}");
        }
        DeadAction::Retry { ids, queue, all } | DeadAction::Purge { ids, queue, all }
            if ids.is_empty() && queue.is_none() && !all =>
        {
            anyhow::bail!("say which dead letters: ids, --queue NAME, or --all");
        }
        DeadAction::Retry { ids, queue, all: _ } => {
            let mut n = 0;
            for q in queues(&queue).await? {
                n += dead::retry(&mut conn, &QueueKeys::new(prefix, &q), &ids).await?;
            }
            println!("{n} dead letters put back on their queue");
        }
        DeadAction::Purge { ids, queue, all: _ } => {
            let mut n = 0;
            for q in queues(&queue).await? {
                n += dead::purge(&mut conn, &QueueKeys::new(prefix, &q), &ids).await?;
            }
            println!("{n} dead letters deleted");
        }
    }
    Ok(())
}
