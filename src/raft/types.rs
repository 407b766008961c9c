//! The three numbers Raft juggles, as distinct types so they cannot be mixed:
//! a term is not an index, and neither is a node id.

use std::fmt;

/// A Raft term (paper §5.1). Term 0 precedes every election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

/// A log position. Index 0 is the empty prefix; the first entry is at index 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Index(pub u64);

/// A member's id, as written in the peers file. Ids are at least 1; 0 never names
/// a node (it is "none" on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl Term {
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl Index {
    pub const ZERO: Index = Index(0);

    pub fn next(self) -> Index {
        Index(self.0 + 1)
    }

    /// The index before this one; `Index(0).prev()` is a bug and panics.
    pub fn prev(self) -> Index {
        assert!(self.0 > 0, "Index(0) has no predecessor");
        Index(self.0 - 1)
    }

    pub fn plus(self, n: u64) -> Index {
        Index(self.0 + n)
    }

    /// The number of indexes in `(from, self]`; 0 when `from >= self`.
    pub fn distance_from(self, from: Index) -> u64 {
        self.0.saturating_sub(from.0)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
