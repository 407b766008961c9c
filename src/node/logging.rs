//! Log lines carry the node id, its role and its term (the issue asks for it
//! on every line), so that interleaved logs of a cluster read as one story.
//! simplelog formats and writes; this wrapper adds the context, which the
//! core thread updates as it changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use log::{Log, Metadata, Record};

use crate::raft::Role;

/// What every log line says about the node; shared with the core thread.
#[derive(Debug, Default)]
pub struct LogContext {
    id: AtomicU64,
    role: AtomicU8,
    term: AtomicU64,
}

impl LogContext {
    pub fn set(&self, role: Role, learner: bool, term: u64) {
        let code = match (role, learner) {
            (_, true) => 4,
            (Role::Follower, _) => 0,
            (Role::PreCandidate | Role::Candidate, _) => 1,
            (Role::Leader, _) => 2,
        };
        self.role.store(code, Ordering::Relaxed);
        self.term.store(term, Ordering::Relaxed);
    }

    /// Whether the core last said this node leads.
    pub fn leads(&self) -> bool {
        self.role.load(Ordering::Relaxed) == 2
    }

    fn role_name(&self) -> &'static str {
        match self.role.load(Ordering::Relaxed) {
            0 => "follower",
            1 => "candidate",
            2 => "leader",
            _ => "learner",
        }
    }
}

struct ContextLogger {
    inner: Box<dyn Log>,
    context: Arc<LogContext>,
}

impl Log for ContextLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let c = &self.context;
        self.inner.log(
            &Record::builder()
                .args(format_args!(
                    "[node {} {} t{}] {}",
                    c.id.load(Ordering::Relaxed),
                    c.role_name(),
                    c.term.load(Ordering::Relaxed),
                    record.args()
                ))
                .level(record.level())
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Logs to standard error at `level`; returns the context to keep current.
pub fn init(id: u64, level: log::LevelFilter) -> Arc<LogContext> {
    let context = Arc::new(LogContext::default());
    context.id.store(id, Ordering::Relaxed);
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    let inner = simplelog::WriteLogger::new(level, config, std::io::stderr());
    let logger = ContextLogger { inner, context: context.clone() };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    context
}
