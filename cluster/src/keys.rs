//! The key schema of the shared store, in one place and versioned: every key is
//! `/limes/v1/KIND/...`. A node reads and writes only keys of its schema version, so a
//! future layout can live beside this one during an upgrade.
//!
//! - `member/NAME`: a node, held by its lease (JSON: name, addresses, load);
//! - `tables/KEY`: a table entry changed at run time, `KEY` as the tables journal names
//!   it (`subscriber/ID`, `trusted/ID`, `address/ID`, `trunk/NAME`, `routes/api`,
//!   `drain/TRUNK/URI`);
//! - `location/AOR CONTACT`: a binding, as the location journal names and writes it (the
//!   node its flow lives on inside).

/// The prefix of every key of this schema version.
pub const ROOT: &str = "/limes/v1/";
/// Node membership.
pub const MEMBERS: &str = "/limes/v1/member/";
/// Tables changed at run time.
pub const TABLES: &str = "/limes/v1/tables/";

/// Registrations.
pub const LOCATION: &str = "/limes/v1/location/";

/// The store key of a location journal key.
pub fn location(journal_key: &str) -> String {
    format!("{LOCATION}{journal_key}")
}

/// The location journal key of a store key, if it is one.
pub fn location_key(store_key: &str) -> Option<&str> {
    store_key.strip_prefix(LOCATION).filter(|k| !k.is_empty())
}

/// The membership key of node `name`.
pub fn member(name: &str) -> String {
    format!("{MEMBERS}{name}")
}

/// The store key of a tables journal key.
pub fn table(journal_key: &str) -> String {
    format!("{TABLES}{journal_key}")
}

/// The tables journal key of a store key, if it is one.
pub fn table_key(store_key: &str) -> Option<&str> {
    store_key.strip_prefix(TABLES).filter(|k| !k.is_empty())
}

/// The node name of a membership key, if it is one.
pub fn member_name(store_key: &str) -> Option<&str> {
    store_key.strip_prefix(MEMBERS).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_stay_in_their_version() {
        assert_eq!(
            table("subscriber/alice@example.com"),
            "/limes/v1/tables/subscriber/alice@example.com"
        );
        assert_eq!(
            table_key(&table("trusted/10.0.0.0/8")),
            Some("trusted/10.0.0.0/8")
        );
        assert_eq!(member_name(&member("edge-1")), Some("edge-1"));
        assert_eq!(
            table_key("/limes/v2/tables/subscriber/x"),
            None,
            "another version"
        );
        assert_eq!(table_key(TABLES), None);
        assert_eq!(member_name(&table("member/x")), None);
        assert_eq!(
            location_key(&location("alice sip:alice@192.0.2.1")),
            Some("alice sip:alice@192.0.2.1")
        );
        assert_eq!(location_key(&table("x")), None);
        assert!(member("a").starts_with(ROOT) && table("a").starts_with(ROOT));
        assert!(location("a").starts_with(ROOT));
    }
}
