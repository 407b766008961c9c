//! Client accounts (`--users FILE`, README, Security): who may connect and what each
//! may run. A line is `<name> <sha256 hex of password> <role>`, `#` starts a
//! comment; roles are `read` (commands that change nothing), `write` (also
//! writes) and `admin` (everything: `RAFT ...`, `CLIENT KILL`, `CONFIG`). The
//! file holds no password, only its SHA-256, and a password is checked in
//! constant time. A bare `AUTH password` is the user `default`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

/// What a command needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    /// Changes nothing (reads, INFO, PING, this connection's own settings).
    Read,
    /// Changes the data.
    Write,
    /// Changes the cluster or other clients (RAFT, CLIENT KILL, CONFIG).
    Admin,
}

impl Role {
    pub fn permits(self, needed: Category) -> bool {
        match needed {
            Category::Read => true,
            Category::Write => self >= Role::Write,
            Category::Admin => self == Role::Admin,
        }
    }

    fn parse(word: &str) -> Option<Role> {
        match word {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// The accounts of `--users`.
#[derive(Clone)]
pub struct Users {
    by_name: HashMap<String, ([u8; 32], Role)>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} accounts)", self.by_name.len())
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal in time that depends only on the length.
fn same_bytes(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

fn hex32(word: &str) -> Option<[u8; 32]> {
    if word.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(word.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--users {}: {e}", path.display()))?;
        Users::parse(&text).map_err(|(line, e)| format!("{}:{line}: {e}", path.display()))
    }

    /// Parses a users file; an error names the line (1-based).
    pub fn parse(text: &str) -> Result<Users, (usize, String)> {
        let mut by_name = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, digest, role] = words[..] else {
                return Err((n + 1, format!("expected `<name> <sha256 hex of password> <role>`, got {line:?}")));
            };
            let digest =
                hex32(digest).ok_or_else(|| (n + 1, format!("{digest:?} is not a SHA-256 in hex (64 hex digits)")))?;
            let role =
                Role::parse(role).ok_or_else(|| (n + 1, format!("role {role:?} is not read, write or admin")))?;
            if by_name.insert(name.to_string(), (digest, role)).is_some() {
                return Err((n + 1, format!("user {name:?} is listed twice")));
            }
        }
        if by_name.is_empty() {
            return Err((1, "no users in the file: nobody could connect".to_string()));
        }
        Ok(Users { by_name })
    }

    /// The role of `user` if `password` is theirs. An unknown user costs
    /// the same comparison as a known one.
    pub fn check(&self, user: &str, password: &[u8]) -> Option<Role> {
        let given = sha256(password);
        let (stored, role) = self.by_name.get(user).copied().unwrap_or(([0xa5; 32], Role::Read));
        let matches = same_bytes(&given, &stored);
        (matches && self.by_name.contains_key(user)).then_some(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn accounts_are_checked_by_the_hash_of_their_password() {
        let text = format!(
            "# accounts\nalice {} admin\nbob {} read   # a reader\n\ndefault {} write\n",
            hex(sha256(b"wonderland")),
            hex(sha256(b"builder")),
            hex(sha256(b"s3cret"))
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.check("alice", b"wonderland"), Some(Role::Admin));
        assert_eq!(users.check("alice", b"Wonderland"), None);
        assert_eq!(users.check("bob", b"builder"), Some(Role::Read));
        assert_eq!(users.check("default", b"s3cret"), Some(Role::Write));
        assert_eq!(users.check("mallory", b"wonderland"), None);
        assert!(Role::Read.permits(Category::Read) && !Role::Read.permits(Category::Write));
        assert!(Role::Write.permits(Category::Write) && !Role::Write.permits(Category::Admin));
        assert!(Role::Admin.permits(Category::Admin));
        assert_eq!(format!("{users:?}"), "Users(3 accounts)");
    }

    #[test]
    fn a_bad_file_names_the_line() {
        let good = hex(sha256(b"x"));
        let cases = [
            (format!("alice {good}\n"), 1, "expected `<name> <sha256 hex of password> <role>`"),
            ("# c\nalice abc admin\n".to_string(), 2, "is not a SHA-256 in hex"),
            (format!("alice {good} root\n"), 1, "role \"root\" is not read, write or admin"),
            (format!("alice {good} read\nalice {good} admin\n"), 2, "listed twice"),
            ("# nobody\n".to_string(), 1, "no users"),
        ];
        for (text, line, what) in cases {
            let (n, e) = Users::parse(&text).err().unwrap();
            assert_eq!(n, line, "{text:?}: {e}");
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }
}
