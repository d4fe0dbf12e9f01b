//! `cairn build`'s front end, pure: the Dockerfile parsed into plain
//! stages and instructions (`dockerfile`), Docker's variable substitution
//! (`expand`) and `.dockerignore` matching (`ignore`). Nothing here reads a
//! file or runs anything; the builder gives them strings.

pub mod dockerfile;
pub mod expand;
pub mod fuzz;
pub mod ignore;
