//! The matcher against the seeds' policies and the ordering rules, as tables.

use super::*;

type Groups = Vec<(u32, Option<Arc<str>>)>;

/// (method, user, local domain, groups, trusted, authenticated, after, expected rule)
type Case<'a> = (
    Method,
    &'a str,
    bool,
    &'a Groups,
    bool,
    bool,
    Option<usize>,
    Option<&'a str>,
);

fn rule(
    name: &str,
    source: &str,
    user: Option<&str>,
    registered: Option<bool>,
    action: &str,
) -> RuleDef {
    RuleDef {
        name: name.into(),
        priority: 100,
        source: source.into(),
        method: vec!["INVITE".into()],
        user: user.map(Into::into),
        domain: None,
        registered,
        action: action.into(),
        set_headers: BTreeMap::new(),
        remove_headers: Vec::new(),
        vars: BTreeMap::new(),
    }
}

fn trunks(name: &str) -> bool {
    matches!(name, "carrier" | "pstn")
}

/// Seed 002 (carrier group 200, subscribers out to the carrier) with seed 004's media
/// server by prefix and a second carrier in group 300 with a rule of its own.
fn seeds() -> Policy {
    Policy::compile(
        vec![
            rule("carrier-to-user", "group:200", None, Some(true), "location"),
            rule(
                "carrier-to-nobody",
                "group:200",
                None,
                None,
                "reply:404 User not Registered",
            ),
            rule(
                "b-to-ivr",
                "group:300",
                None,
                None,
                "relay:sip:127.0.0.9:5090",
            ),
            rule(
                "media",
                "subscriber",
                Some("prefix:*9"),
                None,
                "relay:sip:127.0.0.8:5080",
            ),
            rule("user", "subscriber", None, Some(true), "location"),
            rule("out", "subscriber", None, None, "trunk:carrier"),
            rule(
                "international",
                "subscriber",
                Some("prefix:00"),
                None,
                "trunk:pstn",
            ),
            rule(
                "germany",
                "subscriber",
                Some("prefix:0049"),
                None,
                "trunk:carrier",
            ),
            rule("emergency", "any", Some("exact:112"), None, "trunk:pstn"),
        ],
        &trunks,
    )
    .expect("compiles")
}

fn facts<'a>(
    method: &'a Method,
    user: &'a str,
    groups: &'a [(u32, Option<Arc<str>>)],
) -> Facts<'a> {
    Facts {
        method,
        user,
        domain: "example.com",
        local_domain: true,
        groups,
        trusted: false,
        authenticated: false,
    }
}

#[test]
fn the_seed_policies() {
    let p = seeds();
    let g200: Groups = vec![(200, Some("carrier-a".into()))];
    let g300: Groups = vec![(300, None)];
    let none: Groups = vec![];
    // (groups, trusted, user, registered, expected rule)
    let cases: &[(&Groups, bool, &str, bool, Option<&str>)] = &[
        (&g200, false, "alice", true, Some("carrier-to-user")),
        (&g200, false, "nobody", false, Some("carrier-to-nobody")),
        // Group 300 is matched only by group 300's rules.
        (&g300, false, "alice", true, Some("b-to-ivr")),
        (&none, false, "alice", true, Some("user")),
        (&none, false, "4930123", false, Some("out")),
        (&none, false, "*9100", false, Some("media")),
        // The longest prefix wins whatever the order it was written in.
        (&none, false, "004930123", false, Some("germany")),
        (&none, false, "0033123", false, Some("international")),
        // Exact beats every prefix; `any` covers carriers too.
        (&none, false, "112", false, Some("emergency")),
        (&g200, false, "112", false, Some("emergency")),
        // A trusted source matches no subscriber rule.
        (&none, true, "4930123", false, None),
    ];
    for (groups, trusted, user, registered, want) in cases {
        let f = Facts {
            trusted: *trusted,
            ..facts(&Method::Invite, user, groups)
        };
        let got = p.evaluate(&f, None, &mut || *registered);
        assert_eq!(
            got.map(|(_, r)| r.def.name.as_str()),
            *want,
            "{user} {groups:?}"
        );
    }
}

#[test]
fn registration_is_looked_up_only_when_a_rule_needs_it_and_once() {
    let p = seeds();
    let mut asked = 0;
    p.evaluate(&facts(&Method::Invite, "*9100", &[]), None, &mut || {
        asked += 1;
        false
    });
    assert_eq!(
        asked, 0,
        "the media rule decides before any registered rule"
    );
    p.evaluate(&facts(&Method::Invite, "alice", &[]), None, &mut || {
        asked += 1;
        false
    });
    assert_eq!(asked, 1, "two rules ask, the lookup runs once");
}

#[test]
fn methods_domains_tags_priority_and_continuation() {
    let mut register = rule(
        "pbx-register",
        "group:10:pbx",
        Some("regex:^pbx-"),
        None,
        "register",
    );
    register.method = vec!["REGISTER".into()];
    let mut local = rule("local-only", "any", None, None, "location");
    local.domain = Some("local".into());
    local.method = vec![];
    let mut first = rule(
        "first",
        "any",
        Some("exact:999"),
        None,
        "reply:503 Maintenance",
    );
    first.priority = 10;
    let mut challenge = rule("challenge-trusted", "trusted", None, None, "challenge");
    challenge.priority = 5;
    challenge.method = vec!["MESSAGE".into()];
    let mut after = rule("after-challenge", "subscriber", None, None, "trunk:carrier");
    after.method = vec!["MESSAGE".into()];
    let p =
        Policy::compile(vec![register, local, first, challenge, after], &trunks).expect("compiles");
    let pbx: Groups = vec![(10, Some("pbx".into()))];
    let other_tag: Groups = vec![(10, Some("other".into()))];
    // (method, user, local domain, groups, trusted, authenticated, after, expected)
    let cases: &[Case<'_>] = &[
        (
            Method::Register,
            "pbx-1",
            false,
            &pbx,
            false,
            false,
            None,
            Some("pbx-register"),
        ),
        // The tag must match.
        (
            Method::Register,
            "pbx-1",
            false,
            &other_tag,
            false,
            false,
            None,
            None,
        ),
        (
            Method::Options,
            "x",
            true,
            &vec![],
            false,
            false,
            None,
            Some("local-only"),
        ),
        (
            Method::Options,
            "x",
            false,
            &vec![],
            false,
            false,
            None,
            None,
        ),
        // Priority 10 before 100.
        (
            Method::Invite,
            "999",
            true,
            &vec![],
            false,
            false,
            None,
            Some("first"),
        ),
        (
            Method::Message,
            "x",
            false,
            &vec![],
            true,
            false,
            None,
            Some("challenge-trusted"),
        ),
        // After the challenge (rule 0), evaluation goes on as a subscriber's request.
        (
            Method::Message,
            "x",
            false,
            &vec![],
            true,
            true,
            Some(0),
            Some("after-challenge"),
        ),
    ];
    for (method, user, local_domain, groups, trusted, authenticated, after, want) in cases {
        let f = Facts {
            local_domain: *local_domain,
            trusted: *trusted,
            authenticated: *authenticated,
            ..facts(method, user, groups)
        };
        let got = p.evaluate(&f, *after, &mut || false);
        assert_eq!(
            got.map(|(_, r)| r.def.name.as_str()),
            *want,
            "{method:?} {user} {groups:?} after {after:?}"
        );
    }
    assert_eq!(p.rules()[0].def.name, "challenge-trusted");
}

#[test]
fn bad_rules_are_named() {
    let cases = [
        (
            rule("a", "group:x", None, None, "location"),
            "group is a number",
        ),
        (rule("b", "pbx", None, None, "location"), "source \"pbx\""),
        (
            rule("c", "any", Some("regex:("), None, "location"),
            "user regex",
        ),
        (
            rule("d", "any", Some("starts:1"), None, "location"),
            "user \"starts:1\"",
        ),
        (
            rule("e", "any", None, None, "trunk:nowhere"),
            "trunk \"nowhere\" is not defined",
        ),
        (
            rule("f", "any", None, None, "reply:200 OK"),
            "a 3xx-6xx code",
        ),
        (
            rule("g", "any", None, None, "relay:sips:x.example"),
            "UDP or TCP only",
        ),
        (rule("h", "any", None, None, "fork"), "action \"fork\""),
        (
            rule("i", "any", None, Some(true), "challenge"),
            "cannot depend on registration",
        ),
    ];
    for (def, want) in cases {
        let name = def.name.clone();
        let e = Policy::compile(vec![def], &trunks).expect_err(&name);
        assert_eq!(e.rule, name);
        assert!(e.why.contains(want), "{name}: {e}");
    }
    let mut bad_header = rule("j", "any", None, None, "location");
    bad_header.set_headers.insert("Via".into(), "x".into());
    assert!(Policy::compile(vec![bad_header], &trunks).is_err());
    let mut injected = rule("k", "any", None, None, "location");
    injected
        .set_headers
        .insert("X-A".into(), "a\r\nVia: evil".into());
    assert!(Policy::compile(vec![injected], &trunks).is_err());
    let twice = vec![
        rule("l", "any", None, None, "location"),
        rule("l", "any", None, None, "location"),
    ];
    assert_eq!(
        Policy::compile(twice, &trunks).expect_err("dup").why,
        "the name is used twice"
    );
    let mut bad_method = rule("m", "any", None, None, "location");
    bad_method.method = vec!["INV ITE".into()];
    assert!(Policy::compile(vec![bad_method], &trunks).is_err());
}

/// A REGISTER skips its challenge only by a register rule naming the source's address
/// group and the AoRs; the rule is checked for both when written.
#[test]
fn register_rules_name_the_source_and_the_aors() {
    let register = |name: &str, source: &str, user: Option<&str>, method: &str| RuleDef {
        method: vec![method.into()],
        ..rule(name, source, user, None, "register")
    };
    let refused = [
        (
            register("a", "trusted", Some("prefix:55"), "REGISTER"),
            "names its source: group:N",
        ),
        (
            register("b", "any", Some("prefix:55"), "REGISTER"),
            "names its source: group:N",
        ),
        (
            register("c", "group:400", None, "REGISTER"),
            "names the AoRs",
        ),
        (
            register("d", "group:400", Some("prefix:55"), "INVITE"),
            "method = [\"REGISTER\"]",
        ),
        (
            RuleDef {
                method: vec!["REGISTER".into()],
                ..rule("e", "group:400", None, None, "location")
            },
            "only a register rule names it",
        ),
    ];
    for (def, want) in refused {
        let name = def.name.clone();
        let e = Policy::compile(vec![def], &trunks).expect_err(&name);
        assert!(e.why.contains(want), "{name}: {e}");
    }
    let policy = Policy::compile(
        vec![
            rule("carrier-any", "group:400", None, None, "location"),
            register("pbx-users", "group:400:pbx", Some("prefix:55"), "REGISTER"),
        ],
        &trunks,
    )
    .expect("compiles");
    assert!(policy.has_register_rules());
    let pbx: Groups = vec![(400, Some("pbx".into()))];
    let other_tag: Groups = vec![(400, Some("lab".into()))];
    let carrier: Groups = vec![(200, None)];
    #[rustfmt::skip]
    let table: [(&str, &Groups, bool); 4] = [
        ("5501", &pbx, true),        // the PBX, one of its AoRs
        ("alice", &pbx, false),      // the PBX, an AoR it was not given
        ("5501", &other_tag, false), // group 400 but another entry's tag
        ("5501", &carrier, false),   // another group
    ];
    for (user, groups, exempt) in table {
        let f = facts(&Method::Register, user, groups);
        assert_eq!(
            policy.register_exempt(&f).is_some(),
            exempt,
            "{user} from {groups:?}"
        );
    }
    assert!(
        !seeds().has_register_rules(),
        "without a register rule every REGISTER is challenged"
    );
}

/// Address groups by name: `group:NAME` and `group:NAME:TAG` are the group's number once
/// compiled; a name nobody defined is refused by name.
#[test]
fn groups_by_name() {
    let named: BTreeMap<String, u32> = [("carrier-a".to_owned(), 200)].into();
    let names = Known {
        trunks,
        groups: &named,
    };
    let p = Policy::compile(
        vec![
            rule("tagged", "group:carrier-a:gw", None, None, "trunk:pstn"),
            rule("by-name", "group:carrier-a", None, None, "location"),
        ],
        &names,
    )
    .expect("compiles");
    let invite = Method::Invite;
    let gw: Groups = vec![(200, Some("gw".into()))];
    let plain: Groups = vec![(200, None)];
    let other: Groups = vec![(300, None)];
    let decide = |groups: &Groups| {
        p.evaluate(&facts(&invite, "4930", groups), None, &mut || false)
            .map(|(_, r)| r.def.name.clone())
    };
    assert_eq!(decide(&gw).as_deref(), Some("tagged"));
    assert_eq!(decide(&plain).as_deref(), Some("by-name"));
    assert_eq!(decide(&other), None);
    let e = Policy::compile(
        vec![rule("x", "group:carrier-z", None, None, "location")],
        &names,
    )
    .expect_err("unknown name");
    assert!(e.why.contains("a defined group name"), "{e}");
}
