use super::*;

fn row(day: u32, imported: bool, units: i64, revenue: Option<i64>, in_stock: Option<bool>) -> Stored {
    Stored {
        day: NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
        imported,
        units,
        revenue,
        in_stock,
    }
}

#[test]
fn days_merge_their_two_sources_by_the_import_first_rules() {
    let s = merge_days(
        "A".into(),
        vec![
            // Both sources: the import's units; its revenue when it has one.
            row(3, false, 2, Some(600), Some(false)),
            row(3, true, 5, Some(1000), Some(true)),
            // Souk's orders only: theirs, and their stock-out.
            row(1, false, 4, Some(1200), Some(false)),
            // An import without revenue: its units, the orders' price; without a flag, the
            // orders' stock-out counts.
            row(2, true, 7, None, None),
            row(2, false, 3, Some(900), Some(false)),
            // An import alone, out of stock.
            row(4, true, 0, None, Some(false)),
        ],
    );
    let d = |n| NaiveDate::from_ymd_opt(2026, 11, n).unwrap();
    assert_eq!(
        s.days,
        vec![
            (d(1), 4, 4, 1200),
            (d(2), 7, 3, 900),
            (d(3), 5, 5, 1000),
            (d(4), 0, 0, 0)
        ]
    );
    assert_eq!(s.out_of_stock, vec![d(1), d(2), d(4)]);
    assert_eq!(s.imported, vec![d(2), d(3), d(4)]);
}
