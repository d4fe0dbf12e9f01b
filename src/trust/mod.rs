//! What cairn may trust in places other users can reach.
//!
//! Login and compute nodes are shared: `/var/tmp`, `/tmp` and abstract
//! socket names are open to every user of the node, and anything cairn
//! creates there and reads back later (the block store, its secret, the
//! image cache, temporary outputs, the `--join` rendezvous) can be
//! pre-created, swapped or squatted by another user. Two rules follow:
//!
//! - **Reach it through checked directory handles** ([`dir`]): every
//!   component of the path is opened with `O_NOFOLLOW | O_DIRECTORY` from
//!   its parent's handle and checked on the handle (owner, mode); what is
//!   inside is then reached with `*at` calls from the last handle, never by
//!   path again. A component another user controls is refused, and the
//!   caller goes on without whatever lived there.
//! - **Authenticate what is read back** ([`secret`]): a per-user secret,
//!   kept in a 0600 file in such a directory, keys a MAC over every block
//!   of the block store and names the `--join` rendezvous, so bytes or
//!   names made by anyone else never verify.

pub mod dir;
pub mod secret;

pub use dir::{Component, OwnDir, Position, TrustError, Verdict, judge};
pub use secret::UserSecret;
