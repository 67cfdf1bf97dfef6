//! Stock decisions from a forecast: the demand over the lead time decides the risk of running
//! out and the reorder point; the demand over lead time plus review period the order-up-to
//! level (a periodic-review, order-up-to policy).

use super::SkuForecast;

/// How a merchant restocks a SKU.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Days from ordering to sellable stock.
    pub lead_time_days: usize,
    /// Days between two looks at the stock (one nightly run ordering weekly: 7).
    pub review_period_days: usize,
    /// Probability of not running out that the reorder point aims for.
    pub service_level: f64,
}

/// The advice for one SKU.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    /// Mean demand over the lead time.
    pub lead_time_demand: f64,
    /// P(demand over the lead time > available stock).
    pub stockout_probability: f64,
    /// The service-level quantile of lead-time demand.
    pub reorder_point: f64,
    /// The service-level quantile of demand over lead time + review period.
    pub order_up_to: f64,
    /// What to order now: order-up-to minus the stock position when at or below the reorder
    /// point, else 0.
    pub suggested_order: f64,
    /// Expected units of demand not served over the lead time.
    pub expected_shortfall: f64,
    /// The first forecast day on which cumulative mean demand exceeds the stock, if any.
    pub days_of_cover: Option<usize>,
}

/// Advice for a SKU with `available` units in stock (on hand minus reserved) and `on_order`
/// units already ordered.
pub fn advise(f: &SkuForecast, available: f64, on_order: f64, p: &Policy) -> Advice {
    let available = available.max(0.0);
    let lead = f.demand_over(p.lead_time_days);
    let cover = f.demand_over(p.lead_time_days + p.review_period_days);
    let reorder_point = lead.quantile(p.service_level);
    let order_up_to = cover.quantile(p.service_level);
    let position = available + on_order.max(0.0);
    let suggested_order = if position <= reorder_point {
        (order_up_to - position).max(0.0).ceil()
    } else {
        0.0
    };
    let mut cum = 0.0;
    let days_of_cover = f.mean.iter().position(|m| {
        cum += m;
        cum > available
    });
    Advice {
        lead_time_demand: lead.mean,
        stockout_probability: (1.0 - lead.cdf(available)).clamp(0.0, 1.0),
        reorder_point,
        order_up_to,
        suggested_order,
        expected_shortfall: lead.expected_shortfall(available),
        days_of_cover,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::forecast::{classify::DemandClass, SkuForecast};

    fn flat(mean: f64, dispersion: f64) -> SkuForecast {
        SkuForecast {
            class: DemandClass::Smooth,
            adi: 1.0,
            cv2: 0.1,
            model: "ses",
            fallback: None,
            history_days: 365,
            mean: vec![mean; 28],
            p50: vec![0.0; 28],
            p90: vec![0.0; 28],
            p95: vec![0.0; 28],
            validation_rmsse: None,
            dispersion,
            candidates: vec![],
        }
    }

    #[test]
    fn poisson_lead_time_demand_gives_table_values() {
        // 7 days at 2/day, Poisson: lead-time demand Poisson(14). P(D ≤ 14) = 0.570, so with 14
        // in stock the stock-out probability is 0.430; the 95 % quantile of Poisson(14) is 20;
        // over 14 days Poisson(28) has its 95 % quantile at 37.
        let p = Policy {
            lead_time_days: 7,
            review_period_days: 7,
            service_level: 0.95,
        };
        let a = advise(&flat(2.0, 1.0), 14.0, 0.0, &p);
        assert!((a.lead_time_demand - 14.0).abs() < 1e-9);
        assert!(
            (a.stockout_probability - 0.4296).abs() < 1e-3,
            "{}",
            a.stockout_probability
        );
        assert_eq!(a.reorder_point, 20.0);
        assert_eq!(a.order_up_to, 37.0);
        assert_eq!(a.suggested_order, 23.0);
        assert_eq!(a.days_of_cover, Some(7));
        // Plenty of stock: no risk, nothing to order.
        let a = advise(&flat(2.0, 1.0), 100.0, 0.0, &p);
        assert!(a.stockout_probability < 1e-9 && a.suggested_order == 0.0 && a.days_of_cover.is_none());
        // Stock already on order counts towards the position.
        let a = advise(&flat(2.0, 1.0), 5.0, 30.0, &p);
        assert_eq!(a.suggested_order, 0.0);
        // More spread → higher reorder point for the same mean.
        assert!(advise(&flat(2.0, 4.0), 14.0, 0.0, &p).reorder_point > 20.0);
    }
}
