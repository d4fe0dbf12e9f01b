//! Fuzz target `site_config`: `/etc/cairn/cairn.toml` and the user's
//! config file, parsed and resolved (hooks, binds, devices, policy paths).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn::config::fuzz::fuzz_site_config(data);
});
