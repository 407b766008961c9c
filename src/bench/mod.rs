//! Measuring the store: the load generator of `bin/bench`, the servers the
//! experiments of `bin/lab` start, and how their results are written.

pub mod cpu;
pub mod hist;
pub mod lab;
pub mod load;
pub mod local;
pub mod plot;
pub mod report;
