//! Saves `batches` batches of `count` records of about `size` bytes each
//! (parameters from the metadata): batchSave through the import, with the
//! records built inside the guest.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Error, Nango, sync};

#[derive(Deserialize)]
struct Params {
    batches: usize,
    count: usize,
    size: usize,
}

#[derive(Serialize)]
struct Record {
    id: String,
    name: String,
    body: String,
}

#[sync]
fn fetch_data(nango: &Nango) -> Result<(), Error> {
    let p: Params = nango.metadata()?;
    let filler = "x".repeat(p.size.saturating_sub(40));
    for b in 0..p.batches {
        let records: Vec<Record> = (0..p.count)
            .map(|i| Record {
                id: format!("{b}-{i}"),
                name: format!("record {i}"),
                body: filler.clone(),
            })
            .collect();
        nango.batch_save(&records, "Item")?;
    }
    Ok(())
}

fn main() {}
