//! `lincheck FILE`: checks a recorded history (the text form of
//! `raftkv::lincheck::to_text`) for linearizability.
//!
//! Exit 0: linearizable. 1: not (the smallest failing sub-history found is
//! printed). 2: the file is unreadable or malformed, or the search ran out of
//! budget.

use std::process::ExitCode;

use raftkv::lincheck::{self, Budget, Verdict};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = &args[..] else {
        eprintln!("usage: lincheck HISTORY-FILE");
        return ExitCode::from(2);
    };
    if path == "-h" || path == "--help" {
        println!("usage: lincheck HISTORY-FILE");
        return ExitCode::SUCCESS;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lincheck: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let ops = match lincheck::from_text(&text) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("lincheck: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    match lincheck::check(&ops, Budget::default()) {
        Ok(Verdict::Linearizable) => {
            println!("linearizable ({} operations)", ops.len());
            ExitCode::SUCCESS
        }
        Ok(Verdict::NotLinearizable { key, minimal }) => {
            println!("NOT linearizable: key {}; a smallest failing sub-history:", lincheck::show(&key));
            print!("{}", lincheck::render(&minimal));
            ExitCode::from(1)
        }
        Ok(Verdict::Undecided { key }) => {
            println!("undecided: the search for key {} ran out of budget", lincheck::show(&key));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("lincheck: {path}: {e}");
            ExitCode::from(2)
        }
    }
}
