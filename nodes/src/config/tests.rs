use super::*;

#[test]
fn address_group_names_are_checked() {
    let with = |groups: &str| {
        toml::from_str::<Config>(&format!(
            "{groups}\n[[route]]\nname = \"r\"\nsource = \"group:carrier-a\"\naction = \"location\"\n"
        ))
        .expect("parses")
        .resolve()
    };
    let ok = with("[[address_group]]\ngroup = 200\nname = \"carrier-a\"\n").expect("named");
    assert_eq!(ok.group_names.get("carrier-a"), Some(&200));
    let missing = with("").expect_err("no such name").to_string();
    assert!(missing.contains("carrier-a"), "{missing}");
    for (bad, why) in [
        ("group = 200\nname = \"300\"", "not a number"),
        ("group = 0\nname = \"carrier-a\"", "a group from 1"),
    ] {
        let e = with(&format!("[[address_group]]\n{bad}\n"))
            .expect_err(bad)
            .to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
    let twice = with(
        "[[address_group]]\ngroup = 200\nname = \"carrier-a\"\n[[address_group]]\ngroup = 201\nname = \"carrier-a\"\n",
    )
    .expect_err("twice")
    .to_string();
    assert!(twice.contains("named twice"), "{twice}");
}

#[test]
fn defaults_resolve() {
    let r = Config::default().resolve().unwrap();
    assert_eq!(r.listens.len(), 2);
    assert_eq!(r.admin.to_string(), "127.0.0.1:8080");
    assert!(r.proxy.next_hops.is_empty());
}

/// The first TOML block under `heading` in README.md.
fn readme_toml(heading: &str) -> String {
    include_str!("../../../README.md")
        .lines()
        .skip_while(|l| *l != heading)
        .skip_while(|l| !l.starts_with("```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn readme_configuration_block_parses_with_the_defaults() {
    let example = readme_toml("## Configuration");
    assert!(
        example.contains("[flood]"),
        "README.md has the configuration block"
    );
    let c: Config = toml::from_str(&example).unwrap();
    let documented = c.resolve().unwrap();
    let defaults = Config::default().resolve().unwrap();
    assert_eq!(
        format!("{documented:?}"),
        format!("{defaults:?}"),
        "README values are the defaults"
    );
}

#[test]
fn readme_trunk_and_route_example_resolves_and_bad_rules_are_named() {
    let example = readme_toml("### Trunks and routing rules");
    let c: Config = toml::from_str(&example).unwrap();
    let r = c.resolve().unwrap();
    assert_eq!(r.trunks.len(), 1);
    assert_eq!(r.routes.len(), 5);
    let mut bad = c.clone();
    bad.route[4].action = "trunk:carrier-b".into();
    let e = bad.resolve().unwrap_err().to_string();
    assert!(e.contains("\"out\"") && e.contains("carrier-b"), "{e}");
    // The next hops become the trunk the default rules send calls out through.
    let mut hops = Config::default();
    hops.sip.next_hop = vec!["sip:127.0.0.1:5080".into()];
    let r = hops.resolve().unwrap();
    assert_eq!(r.trunks[0].name, DEFAULT_TRUNK);
    assert!(r.routes.iter().any(|x| x.action == "trunk:default"));
}

#[test]
fn mistakes_are_reported() {
    assert!(
        toml::from_str::<Config>("[sip]\nlisen = []").is_err(),
        "unknown key"
    );
    let mut c = Config::default();
    c.sip.listen = vec!["sctp:127.0.0.1:5060".into()];
    assert!(c.resolve().is_err());
    let mut c = Config::default();
    c.sip.next_hop = vec!["sip:127.0.0.1:5080;transport=tcp".into()];
    c.sip.listen = vec!["udp:127.0.0.1:5060".into()];
    assert!(c.resolve().is_err(), "no tcp listener for a tcp next hop");
}
