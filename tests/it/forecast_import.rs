//! `souk forecast import`: a merchant's own history in, checked whole first, merged with souk's
//! order history without counting a day twice, or replacing the previous import.

use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::support::TestEnv;

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn import(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let mut all = vec!["forecast", "import", "--merchant", "m-hist"];
    all.extend_from_slice(args);
    env.run_souk(&all)
}

async fn add_merchant(env: &TestEnv, id: &str) {
    let input = souk::store::merchants::MerchantInput {
        name: None,
        webhook_url: Some(format!("https://{id}.example/hook")),
        acceptance_mode: None,
        acceptance_default: None,
        acceptance_deadline_s: None,
        commission_bps: None,
        webhook_version: None,
    };
    souk::admin::add_merchant(&env.app, id, &input).await.unwrap();
}

async fn imported_rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sku_daily_demand WHERE source = 'imported'")
        .fetch_one(&env.app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_import_is_checked_whole_merged_without_double_counting_and_replaceable() {
    let env = TestEnv::new().await;
    add_merchant(&env, "m-hist").await;
    let pool = &env.app.pool;
    // souk's own orders sold 5 of A on 11-02 at 3.00 (what refresh_demand_from_orders writes).
    sqlx::query(
        "INSERT INTO sku_daily_demand (merchant_id, sku, day, source, units, revenue_minor)
         VALUES ('m-hist', 'A', '2026-11-02', 'orders', 5, 1500)",
    )
    .execute(pool)
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("souk-import-{}", env.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };

    // A file with bad lines: each named, nothing written.
    let bad = write(
        "bad.csv",
        "sku,date,units\nA,2026-11-01,2\nA,2026-11-01,3\nB,2026-13-01,1\nC,2026-11-01,-4\n",
    );
    let (ok, text) = import(&env, &[&bad]);
    assert!(!ok, "{text}");
    for line in [":3: A on 2026-11-01 again", ":4: date", ":5: units"] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(text.contains("3 bad lines: nothing imported"), "{text}");
    assert_eq!(imported_rows(&env).await, 0);

    // A good file: the merchant's own figure for 11-02 (7, every channel) is the day's demand,
    // not 7 + souk's 5; the day's price still comes from souk's orders.
    let good = write(
        "history.csv",
        "sku,date,units,in_stock\nA,2026-11-01,2,true\nA,2026-11-02,7,true\nA,2026-11-03,0,false\nB,2026-11-02,4,\n",
    );
    let (ok, text) = import(&env, &[&good]);
    assert!(ok, "{text}");
    assert!(text.contains("4 rows imported"), "{text}");
    let units =
        souk::store::forecasts::daily_units(pool, "m-hist", "A", day("2026-11-01"), day("2026-11-03"))
            .await
            .unwrap();
    assert_eq!(units, [2.0, 7.0, 0.0], "one count per day");
    let (_, inputs) =
        souk::store::forecasts::merchant_inputs(pool, "m-hist", day("2026-11-01"), day("2026-11-03"))
            .await
            .unwrap();
    let a = inputs.iter().find(|i| i.sku == "A").unwrap();
    let d2 = a.days.iter().find(|d| d.0 == day("2026-11-02")).unwrap();
    assert_eq!(
        *d2,
        (day("2026-11-02"), 7, 5, 1500),
        "units imported, price from souk's 5 at 3.00"
    );
    let stock: Option<bool> = sqlx::query_scalar(
        "SELECT in_stock FROM sku_daily_demand WHERE sku = 'A' AND day = '2026-11-03' AND source = 'imported'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(stock, Some(false));

    // The same file again: the same rows, not more.
    let (ok, _) = import(&env, &[&good]);
    assert!(ok);
    assert_eq!(imported_rows(&env).await, 4);

    // Merge (JSON lines): the file's days win, the others stay.
    let more = write(
        "more.jsonl",
        "{\"sku\": \"B\", \"date\": \"2026-11-02\", \"units\": 6, \"revenue_minor\": 1200}\n{\"sku\": \"C\", \"date\": \"2026-11-02\", \"units\": 1}\n",
    );
    let (ok, text) = import(&env, &[&more]);
    assert!(ok, "{text}");
    assert_eq!(imported_rows(&env).await, 5);
    // Replace: only the new file's rows are left.
    let (ok, text) = import(&env, &["--replace", &more]);
    assert!(ok, "{text}");
    assert!(text.contains("(5 replaced)"), "{text}");
    assert_eq!(imported_rows(&env).await, 2);
    let units =
        souk::store::forecasts::daily_units(pool, "m-hist", "A", day("2026-11-02"), day("2026-11-02"))
            .await
            .unwrap();
    assert_eq!(
        units,
        [5.0],
        "with the import gone, souk's own orders count again"
    );

    // Through the admin API: the same check, refusals as JSON with their lines.
    let token = "admin-token-for-import-tests-0123";
    let admin = TestEnv::with(&[("SOUK_ADMIN__TOKEN", token)]).await;
    add_merchant(&admin, "m-hist").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = souk::http::router(admin.app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let post = |body: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{addr}/admin/merchants/m-hist/demand-history"))
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    let r = post("sku,date,units\nA,2026-11-01,1\nA,2026-11-01,x\n")
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["line"], 3, "{v}");
    let r = post("sku,date,units\nA,2026-11-01,1\n").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["rows"], json!(1));
    std::fs::remove_dir_all(&dir).ok();
    admin.cleanup().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_merchant_sends_its_history_calendar_and_time_zone_through_its_api() {
    use souk::merchant_api::keys::{self, Scope};
    let env = TestEnv::new().await;
    let pool = &env.app.pool;
    for id in ["m-own", "m-other"] {
        add_merchant(&env, id).await;
    }
    let key = keys::create(pool, "m-own", Scope::Act, None).await.unwrap().key;
    let read_only = keys::create(pool, "m-own", Scope::Read, None).await.unwrap().key;
    let base = crate::support::serve_merchant_api(&env.app).await;
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, key: &str, kind: &str, body: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(key)
            .header("content-type", kind)
            .body(body.to_owned())
            .send()
    };
    let rows = |merchant: &'static str| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM sku_daily_demand WHERE merchant_id = $1 AND source = 'imported'",
        )
        .bind(merchant)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let post = reqwest::Method::POST;

    // A read-only key may not write; a file in no known format is refused as such.
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/history",
        &read_only,
        "text/csv",
        "sku,date,units\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/history",
        &key,
        "text/plain",
        "x",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 415);

    // Bad lines: each named, nothing written.
    let bad = "sku,date,units\nA,2026-11-01,2\nA,2026-11-01,3\nB,2026-13-01,1\n";
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/history",
        &key,
        "text/csv",
        bad,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "invalid_lines", "{p}");
    assert_eq!(p["error_count"], 2, "{p}");
    let lines: Vec<i64> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4], "{p}");
    assert_eq!(rows("m-own").await, 0);

    // JSON lines, merged; the rows are the caller's, never another merchant's.
    let good = "{\"sku\":\"A\",\"date\":\"2026-11-01\",\"units\":2}\n{\"sku\":\"A\",\"date\":\"2026-11-02\",\"units\":4,\"in_stock\":false}\n";
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/history",
        &key,
        "application/x-ndjson",
        good,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"rows": 2, "replaced": 0})
    );
    assert_eq!((rows("m-own").await, rows("m-other").await), (2, 0));
    // Replaced by a CSV of one row.
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/history?replace=true",
        &key,
        "text/csv",
        "sku,date,units\nB,2026-11-03,7\n",
    )
    .await
    .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"rows": 1, "replaced": 2})
    );
    let b: (String, i32) =
        sqlx::query_as("SELECT sku, units FROM sku_daily_demand WHERE merchant_id = 'm-own'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(b, ("B".to_owned(), 7));

    // An empty body is not an empty file: with ?replace=true it would remove everything.
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/history?replace=true",
        &key,
        "text/csv",
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "empty_file");
    assert_eq!(rows("m-own").await, 1);

    // The calendar: bad lines refused whole, a good file written as days.
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/calendar",
        &key,
        "text/csv",
        "kind,from,to\nholiday,2026-12-25,2026-12-24\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["errors"][0]["line"], 2);
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/calendar",
        &key,
        "text/csv",
        "kind,from,to,sku,name\npromotion,2026-11-27,2026-11-30,,Black Friday\n",
    )
    .await
    .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"periods": 1, "days": 4, "replaced": false})
    );
    let days: i64 = sqlx::query_scalar("SELECT count(*) FROM demand_calendar WHERE merchant_id = 'm-own'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(days, 4);

    // The time zone: an unknown name refused with its code, a real one set.
    let put = reqwest::Method::PUT;
    let r = send(
        put.clone(),
        "/merchant/v1/forecasts/time-zone",
        &key,
        "application/json",
        r#"{"time_zone":"Mars/Olympus"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unknown_time_zone");
    let r = send(
        put,
        "/merchant/v1/forecasts/time-zone",
        &key,
        "application/json",
        r#"{"time_zone":"Asia/Shanghai"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let zones: Vec<(String, String)> = sqlx::query_as("SELECT id, time_zone FROM merchants ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        zones,
        vec![
            ("m-other".into(), "UTC".into()),
            ("m-own".into(), "Asia/Shanghai".into())
        ]
    );

    // The country: a code that is not two letters refused with its code, one set, null clears.
    for (body, status) in [(r#"{"country":"China"}"#, 422), (r#"{"country":"cn"}"#, 200)] {
        let r = send(
            reqwest::Method::PUT,
            "/merchant/v1/forecasts/country",
            &key,
            "application/json",
            body,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v = r.json::<Value>().await.unwrap();
        if status == 422 {
            assert_eq!(v["code"], "invalid_country");
        } else {
            assert_eq!(v["country"], "CN");
        }
    }
    let countries: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, country FROM merchants ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        countries,
        vec![("m-other".into(), None), ("m-own".into(), Some("CN".into()))]
    );

    // By week: then a daily file is refused, and a weekly one taken.
    let r = send(
        reqwest::Method::PUT,
        "/merchant/v1/forecasts/period",
        &key,
        "application/json",
        r#"{"period":"week"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"period": "week"}));
    let r = send(
        post.clone(),
        "/merchant/v1/forecasts/history",
        &key,
        "text/csv",
        "sku,date,units\nB,2026-11-03,7\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("one row per week"),
        "{p}"
    );
    let r = send(
        post,
        "/merchant/v1/forecasts/history",
        &key,
        "text/csv",
        "sku,week,units\nB,2026-W44,40\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    env.cleanup().await;
}
