//! The node secret: the key behind everything a peer echoes back to a node (signatures,
//! tokens, nonces). Configured once for a cluster, or generated once into the state
//! directory, so that it outlives the process: state made before a restart, or by another
//! node with the same secret, is still recognised.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file in the state directory that keeps a generated secret.
pub const SECRET_FILE: &str = "node.secret";

/// 32 bytes of key material; subkeys are derived per use so that no two uses share a key.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSecret([u8; 32]);

impl std::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecret(..)")
    }
}

/// Where the secret came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    Configured,
    Kept,
    Generated,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a node secret (64 hex digits expected)")]
    Malformed(PathBuf),
}

impl NodeSecret {
    /// A configured secret: any text, the same on every node of a cluster.
    pub fn from_text(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// The secret kept in `dir`, or a new random one written there (mode 0600, written
    /// to a temporary file and renamed, so a crash never leaves half a secret).
    pub fn load_or_create(dir: &Path) -> Result<(Self, SecretSource), SecretError> {
        let path = dir.join(SECRET_FILE);
        let io = |source| SecretError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return Self::from_hex(text.trim()).map(|s| (s, SecretSource::Kept)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(io)?;
        let secret = Self(bytes);
        let tmp = dir.join(format!("{SECRET_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(secret.to_hex().as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(io)?;
        Ok((secret, SecretSource::Generated))
    }

    fn from_hex(text: &str) -> Result<Self, SecretError> {
        let malformed = || SecretError::Malformed(PathBuf::from(SECRET_FILE));
        if text.len() != 64 {
            return Err(malformed());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = text
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(malformed)?;
        }
        Ok(Self(bytes))
    }

    fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key for one use (`label`: "route", "nonce", ...), independent of every other.
    pub fn subkey(&self, label: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(label.as_bytes());
        h.update([0]);
        h.update(self.0);
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("limes-secret-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn generated_once_then_kept() {
        let d = dir("kept");
        let (a, source) = NodeSecret::load_or_create(&d).expect("creates");
        assert_eq!(source, SecretSource::Generated);
        let (b, source) = NodeSecret::load_or_create(&d).expect("reads");
        assert_eq!(source, SecretSource::Kept);
        assert_eq!(a, b);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(SECRET_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = dir("other");
        let (c, _) = NodeSecret::load_or_create(&other).expect("creates");
        assert_ne!(a, c, "two state directories, two secrets");
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let d = dir("bad");
        std::fs::write(d.join(SECRET_FILE), "not hex").expect("writes");
        assert!(matches!(
            NodeSecret::load_or_create(&d),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn subkeys_differ_by_label_and_secret() {
        let a = NodeSecret::from_text("cluster-one");
        let b = NodeSecret::from_text("cluster-two");
        assert_eq!(
            a.subkey("route"),
            NodeSecret::from_text("cluster-one").subkey("route")
        );
        assert_ne!(a.subkey("route"), a.subkey("nonce"));
        assert_ne!(a.subkey("route"), b.subkey("route"));
    }
}
