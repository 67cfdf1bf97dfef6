//! souk's normalised tracking statuses and each provider's mapping to them, plus the roll-up of
//! shipments into a sub-order and of sub-orders into an order.
//!
//! A provider status souk does not know maps to `None`: the event is still stored with its raw
//! status, but it does not move the shipment.

use serde::{Deserialize, Serialize};

/// A shipment's normalised status (AfterShip's set, plus `returned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    InfoReceived,
    InTransit,
    OutForDelivery,
    AvailableForPickup,
    AttemptFail,
    Delivered,
    Returned,
    Exception,
    Expired,
}

pub const ALL: [Status; 10] = [
    Status::Pending,
    Status::InfoReceived,
    Status::InTransit,
    Status::OutForDelivery,
    Status::AvailableForPickup,
    Status::AttemptFail,
    Status::Delivered,
    Status::Returned,
    Status::Exception,
    Status::Expired,
];

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InfoReceived => "info_received",
            Status::InTransit => "in_transit",
            Status::OutForDelivery => "out_for_delivery",
            Status::AvailableForPickup => "available_for_pickup",
            Status::AttemptFail => "attempt_fail",
            Status::Delivered => "delivered",
            Status::Returned => "returned",
            Status::Exception => "exception",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// No more news is expected: polling stops.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Returned | Status::Expired)
    }
}

/// Tracking providers souk speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// AfterShip: `tag` (and `subtag`) per checkpoint.
    Aftership,
    /// 17TRACK API v2: `status` and `sub_status`.
    Track17,
    /// Kuaidi100: numeric `state`.
    Kuaidi100,
}

/// Maps a provider's status (and sub-status, where the provider has one) to souk's.
pub fn normalise(provider: Provider, status: &str, sub_status: Option<&str>) -> Option<Status> {
    use Status::*;
    match provider {
        Provider::Aftership => Some(match status {
            "Pending" => Pending,
            "InfoReceived" => InfoReceived,
            "InTransit" => InTransit,
            "OutForDelivery" => OutForDelivery,
            "AvailableForPickup" => AvailableForPickup,
            "AttemptFail" => AttemptFail,
            "Delivered" => Delivered,
            // AfterShip reports a parcel back with its sender as an exception subtag.
            "Exception" if sub_status == Some("Exception_011") => Returned,
            "Exception" => Exception,
            "Expired" => Expired,
            _ => return None,
        }),
        Provider::Track17 => Some(match (status, sub_status) {
            ("NotFound", _) => Pending,
            ("InfoReceived", _) => InfoReceived,
            ("InTransit", _) => InTransit,
            ("OutForDelivery", _) => OutForDelivery,
            ("AvailableForPickup", _) => AvailableForPickup,
            ("DeliveryFailure", _) => AttemptFail,
            ("Delivered", _) => Delivered,
            ("Exception", Some("Exception_Returned")) => Returned,
            ("Exception", _) => Exception,
            ("Expired", _) => Expired,
            _ => return None,
        }),
        // Kuaidi100's `state`: 0 在途 in transit, 1 揽收 collected, 2 疑难 problem, 3 签收
        // signed for, 4 退签 returned and signed for by the sender, 5 派件 out for delivery,
        // 6 退回 on its way back, 7 转投 handed to another carrier, 8 清关 in customs,
        // 14 拒签 refused; the detailed codes 101/102 ordered/awaiting collection, 501 in a
        // locker or pick-up point, 301–304 signed-for variants.
        Provider::Kuaidi100 => Some(match status {
            "0" | "1" | "7" | "8" | "103" | "1001" | "1002" => InTransit,
            "101" | "102" => InfoReceived,
            "2" | "6" | "13" => Exception,
            "3" | "301" | "302" | "303" | "304" => Delivered,
            "4" => Returned,
            "5" => OutForDelivery,
            "14" => AttemptFail,
            "501" => AvailableForPickup,
            _ => return None,
        }),
    }
}

/// A sub-order's or order's delivery state rolled up from its parts' statuses: delivered when
/// all are delivered, the worst problem when any has one, else how far the least advanced has
/// come. `None` for no parts.
pub fn roll_up(parts: &[Status]) -> Option<Status> {
    use Status::*;
    if parts.is_empty() {
        return None;
    }
    for problem in [Exception, AttemptFail, Returned, Expired] {
        if parts.contains(&problem) {
            return Some(problem);
        }
    }
    let order = [
        Pending,
        InfoReceived,
        InTransit,
        OutForDelivery,
        AvailableForPickup,
        Delivered,
    ];
    parts
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap_or(0))
        .min()
        .map(|i| order[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_and_finals_are_known() {
        for s in ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert!(Status::Delivered.is_final() && Status::Returned.is_final() && Status::Expired.is_final());
        assert!(!Status::Exception.is_final() && !Status::InTransit.is_final());
    }

    #[test]
    fn provider_tables_map_to_souk_statuses() {
        use Provider::*;
        assert_eq!(
            normalise(Aftership, "OutForDelivery", None),
            Some(Status::OutForDelivery)
        );
        assert_eq!(
            normalise(Aftership, "Exception", Some("Exception_011")),
            Some(Status::Returned)
        );
        assert_eq!(
            normalise(Aftership, "Exception", Some("Exception_004")),
            Some(Status::Exception)
        );
        assert_eq!(normalise(Track17, "NotFound", None), Some(Status::Pending));
        assert_eq!(
            normalise(Track17, "DeliveryFailure", Some("DeliveryFailure_Security")),
            Some(Status::AttemptFail)
        );
        assert_eq!(
            normalise(Track17, "Exception", Some("Exception_Returned")),
            Some(Status::Returned)
        );
        assert_eq!(normalise(Kuaidi100, "3", None), Some(Status::Delivered));
        assert_eq!(normalise(Kuaidi100, "5", None), Some(Status::OutForDelivery));
        assert_eq!(normalise(Kuaidi100, "4", None), Some(Status::Returned));
        assert_eq!(
            normalise(Kuaidi100, "501", None),
            Some(Status::AvailableForPickup)
        );
        assert_eq!(normalise(Kuaidi100, "999", None), None);
        assert_eq!(normalise(Aftership, "Teleported", None), None);
    }

    #[test]
    fn roll_up_waits_for_the_slowest_part_and_surfaces_problems() {
        use Status::*;
        assert_eq!(roll_up(&[]), None);
        assert_eq!(roll_up(&[Delivered, Delivered]), Some(Delivered));
        assert_eq!(roll_up(&[Delivered, InTransit]), Some(InTransit));
        assert_eq!(roll_up(&[OutForDelivery, InfoReceived]), Some(InfoReceived));
        assert_eq!(roll_up(&[Delivered, Exception]), Some(Exception));
        assert_eq!(roll_up(&[AttemptFail, Returned]), Some(AttemptFail));
    }
}
