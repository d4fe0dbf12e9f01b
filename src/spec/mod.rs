//! Plain data and pure parsers that several layers share, kept at the
//! bottom so that none of them imports a higher one: bind specs (the user's
//! `-b`, the site's binds), container edits (site defaults, hooks, CDI
//! devices) and environments as `(name, value)` pairs.

pub mod bind;
pub mod edits;
pub mod env;
