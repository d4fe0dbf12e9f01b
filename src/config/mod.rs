//! Site configuration (`/etc/cairn/cairn.toml`): `[defaults]` a user may
//! override, `[policy]` they may not. Filled in by the clusters work.
