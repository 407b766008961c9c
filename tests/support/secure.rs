//! Secrets, accounts and certificates for clusters under test (README, Security),
//! made with the project's own scripts and written into the cluster's
//! temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use raftkv::auth::sha256;

use super::TestCluster;

/// The secret every secure test cluster shares.
pub const SECRET: &str = "test-cluster-secret-5b0e2c7d";

/// Accounts: `(name, password, role)`.
pub const USERS: [(&str, &str, &str); 4] = [
    ("alice", "alice-pw-9f1d", "admin"),
    ("bob", "bob-pw-73aa", "write"),
    ("carol", "carol-pw-e402", "read"),
    ("default", "default-pw-11c8", "write"),
];

/// Where a cluster's secure files are.
pub struct SecureFiles {
    pub secret: PathBuf,
    pub users: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the secret, the users file and (with `scripts/certs.sh`) the
/// certificates under `dir`, naming `hosts` in the node certificate.
pub fn make_files(dir: &Path, hosts: &[&str]) -> SecureFiles {
    std::fs::create_dir_all(dir).expect("secure dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("write secret");
    let users = dir.join("users");
    let mut text = String::from("# test accounts\n");
    for (name, password, role) in USERS {
        text.push_str(&format!("{name} {} {role}\n", hex(&sha256(password.as_bytes()))));
    }
    std::fs::write(&users, text).expect("write users");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/certs.sh");
    let out = Command::new(script).arg(dir).args(hosts).output().expect("run scripts/certs.sh");
    assert!(out.status.success(), "certs.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    SecureFiles { secret, users, ca: dir.join("ca.pem"), cert: dir.join("node.pem"), key: dir.join("node.key") }
}

/// What a secure cluster turns on.
#[derive(Clone, Copy)]
pub struct Secure {
    pub secret: bool,
    pub users: bool,
    pub tls: bool,
}

impl TestCluster {
    /// Makes the files and gives every node the flags for them.
    pub fn secure(&mut self, what: Secure) -> SecureFiles {
        let files = make_files(&self.dir.path().join("secure"), &[]);
        if what.secret {
            self.flags.extend(["--cluster-secret".to_string(), files.secret.display().to_string()]);
        }
        if what.users {
            self.flags.extend(["--users".to_string(), files.users.display().to_string()]);
        }
        if what.tls {
            for (flag, path) in [("--tls-cert", &files.cert), ("--tls-key", &files.key), ("--tls-ca", &files.ca)] {
                self.flags.extend([flag.to_string(), path.display().to_string()]);
            }
        }
        files
    }
}
