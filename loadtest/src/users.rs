//! Users files: one `user,password[,domain]` per line; `#` starts a comment.

use anyhow::{bail, Context};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
    pub domain: String,
}

pub fn parse(text: &str, default_domain: &str) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split([',', ';']).map(str::trim);
        let (Some(name), Some(password)) = (parts.next(), parts.next()) else {
            bail!("line {}: expected user,password[,domain]", n + 1);
        };
        if name.is_empty() {
            bail!("line {}: empty user name", n + 1);
        }
        let domain = parts
            .next()
            .filter(|d| !d.is_empty())
            .unwrap_or(default_domain);
        users.push(User {
            name: name.into(),
            password: password.into(),
            domain: domain.into(),
        });
    }
    Ok(users)
}

pub fn load(path: &std::path::Path, default_domain: &str) -> anyhow::Result<Vec<User>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, default_domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_domains() {
        let u = parse(
            "# bench users\nuser000001,pw000001,bench.local\n\nalice;secret\n",
            "example.com",
        )
        .unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].domain, "bench.local");
        assert_eq!(
            u[1],
            User {
                name: "alice".into(),
                password: "secret".into(),
                domain: "example.com".into()
            }
        );
        assert!(parse("lonely\n", "x").is_err());
    }
}
