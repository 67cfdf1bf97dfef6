//! The merchant guide in its two languages, checked against the code.

/// The merchant guide and its Chinese translation list the same routes (every route the API
/// serves, and no other) and every event type a merchant receives.
#[test]
fn both_merchant_guides_list_every_route_and_event_type() {
    let guides = [
        ("docs/merchants.md", include_str!("../../docs/merchants.md")),
        (
            "docs/zh-CN/merchants.md",
            include_str!("../../docs/zh-CN/merchants.md"),
        ),
    ];
    let served: std::collections::BTreeSet<String> = souk::merchant_api::ROUTES
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    for (name, text) in guides {
        let mut listed = std::collections::BTreeSet::new();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            for (i, _) in text.match_indices(&format!("`{method} /merchant/v1/")) {
                let route = text[i + 1..].split('`').next().unwrap();
                listed.insert(route.to_owned());
            }
        }
        assert_eq!(listed, served, "{name} lists other routes than the API serves");
        for (kind, _) in souk::merchant_api::test_webhook::EVENT_TYPES {
            assert!(text.contains(&format!("`{kind}`")), "{name} does not name {kind}");
        }
    }
}
