//! Configuration layering, validation and redaction.

use super::*;

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn defaults_load_and_validate() {
    let c = Config::from_layers(None, &[]).unwrap();
    assert_eq!(c.queue.concurrency, 50);
    assert_eq!(c.queue.claim_idle_ms, 15_000);
    assert_eq!(c.redis.key_prefix, "souk");
}

#[test]
fn file_then_env_then_urls_override_in_order() {
    let file = "[queue]\nconcurrency = 7\nbatch_size = 3\n[queues.\"souk.a.v1\"]\nconcurrency = 2\n";
    let c = Config::from_layers(
        Some(("test.toml".into(), file)),
        &vars(&[
            ("SOUK_QUEUE__BATCH_SIZE", "9"),
            ("SOUK_LOG__FORMAT", "json"),
            ("SOUK_QUEUES__souk.b.v1__MAX_ATTEMPTS", "4"),
            ("SOUK_CRON__JOBS__nightlyRun__SCHEDULE", "0 0 3 * * *"),
            ("SOUK_CRON__JOBS__nightlyRun__QUEUE", "souk.a.v1"),
            ("SOUK_CRON__JOBS__nightlyRun__PAYLOAD", "{\"x\":1}"),
            ("REDIS_URL", "redis://10.0.0.1:6380"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c.queue.concurrency, 7);
    assert_eq!(c.queue.batch_size, 9);
    assert_eq!(c.log.format, "json");
    assert_eq!(c.redis.url, "redis://10.0.0.1:6380");
    assert_eq!(c.queue("souk.a.v1").concurrency, 2);
    assert_eq!(c.queue("souk.a.v1").batch_size, 9);
    assert_eq!(c.queue("souk.b.v1").max_attempts, 4);
    assert_eq!(c.queue("souk.other.v1"), c.queue);
    let job = &c.cron.jobs["nightlyRun"];
    assert_eq!(
        (job.schedule.as_str(), job.queue.as_str(), job.payload.as_str()),
        ("0 0 3 * * *", "souk.a.v1", "{\"x\":1}")
    );
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        ("SOUK_QUEUE__CONCURRENCY", "0", "queue.concurrency"),
        ("SOUK_LOG__FORMAT", "xml", "log.format"),
        ("SOUK_OPS__LISTEN", "nowhere", "ops.listen"),
        ("SOUK_QUEUE__CLAIM_IDLE_MS", "5", "queue.claim_idle_ms"),
        ("REDIS_URL", "http://x", "redis.url"),
    ];
    for (var, value, key) in cases {
        let err = Config::from_layers(None, &vars(&[(var, value)])).unwrap_err();
        assert!(err.to_string().contains(key), "{var}={value}: {err}");
    }
}

#[test]
fn unknown_keys_and_bad_cron_are_refused() {
    let err = Config::from_layers(Some(("souk.toml".into(), "[queue]\nconcurency = 3\n")), &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config: `queue.concurency` in souk.toml: unknown field `concurency`"),
        "{err}"
    );
    let err = Config::from_layers(None, &vars(&[("SOUK_WEBHOOKS__TIMOUT_MS", "5")])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config: `webhooks.timout_ms` in environment variable SOUK_WEBHOOKS__TIMOUT_MS"),
        "{err}"
    );
    let err = Config::from_layers(
        Some(("souk.toml".into(), "[webhooks]\ntimeout_ms = \"soon\"\n")),
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`webhooks.timeout_ms` in souk.toml"),
        "{err}"
    );
    let cron = "[cron.jobs.nightly]\nschedule = \"every day\"\nqueue = \"souk.a.v1\"\n";
    let err = Config::from_layers(Some(("f".into(), cron)), &[]).unwrap_err();
    assert!(err.to_string().contains("cron.jobs.nightly.schedule"), "{err}");
}

#[test]
fn arrays_come_from_the_environment_and_secrets_stay_hidden() {
    let c = Config::from_layers(
        None,
        &vars(&[
            ("SOUK_WEBHOOKS__SCHEDULE_S", "[0, 1, 2]"),
            ("SOUK_PAYMENT__API_KEY", "sk_test_abc"),
        ]),
    )
    .unwrap();
    assert_eq!(c.webhooks.schedule_s, vec![0, 1, 2]);
    assert_eq!(c.payment.api_key.expose(), "sk_test_abc");
    assert!(!format!("{c:?}").contains("sk_test_abc"));
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
    assert_eq!(
        redact_url("redis://:pw@h:1,redis://:pw2@h:2"),
        "redis://:***@h:1,redis://:***@h:2"
    );
}
