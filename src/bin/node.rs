//! `node`: one member of a raftkv cluster (README, Running a node).
//!
//! Exit codes: 0 after SIGTERM or SIGINT; 1 when the node cannot run (data
//! directory in use or of another node, a corrupt log, a failed disk, an
//! address in use); 2 for bad flags or a bad peers file.

use std::process::ExitCode;

use raftkv::cli::{self, Command, USAGE};
use raftkv::node::{self, logging, signals};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(&args) {
        Ok(Command::Run(opts)) => *opts,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("node: {e}");
            return ExitCode::from(2);
        }
    };
    signals::install();
    let context = logging::init(opts.id.0, opts.log_level);
    match node::run(opts, context) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, on stderr (README, Running a node); the logger writes there too, so
            // the error is not also logged.
            eprintln!("node: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
