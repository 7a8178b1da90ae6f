//! Calls a cheap import `n` times (n from the metadata): the guest→host
//! round trip, with the loop inside the guest.

use sluice_sdk::{Error, Nango, sync};

#[sync]
fn fetch_data(nango: &Nango) -> Result<(), Error> {
    let n: u64 = nango.metadata::<serde_json::Value>()?["n"]
        .as_u64()
        .unwrap_or(0);
    let mut seen = 0u64;
    for _ in 0..n {
        seen += u64::from(std::hint::black_box(nango.track_deletes()));
    }
    std::hint::black_box(seen);
    Ok(())
}

fn main() {}
