//! Applies a plan of record operations: from the connection's metadata in
//! `fetchData`, from the payload in the webhook handler (which also returns
//! the records it then finds by id).

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_sdk::{Error, MergingStrategy, Nango, sync};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Plan {
    model: String,
    ignore_if_modified_after: bool,
    save: Vec<Value>,
    delete: Vec<Value>,
    update: Vec<Value>,
    lookup: Vec<String>,
    fail_after: bool,
    /// `trackDeletesStart` before the writes, `trackDeletesEnd` after.
    track_start: bool,
    track_end: bool,
    /// `listRecords` pages of this size after the writes.
    list: Option<u32>,
    /// The webhook handler's answer carries a string of this many bytes
    /// (`pad`), to exceed the bound of an answer.
    pad: usize,
}

fn apply(nango: &Nango, plan: &Plan) -> Result<Value, Error> {
    if plan.ignore_if_modified_after {
        nango.set_merging_strategy(MergingStrategy::IgnoreIfModifiedAfter, &plan.model)?;
    }
    if plan.track_start {
        nango.track_deletes_start(&plan.model)?;
    }
    nango.batch_save(&plan.save, &plan.model)?;
    nango.batch_delete(&plan.delete, &plan.model)?;
    nango.batch_update(&plan.update, &plan.model)?;
    if plan.track_end {
        nango.track_deletes_end(&plan.model)?;
    }
    if plan.fail_after {
        return Err(Error::msg("failing after the writes"));
    }
    let found = nango.records_by_ids::<Value>(&plan.lookup, &plan.model)?;
    let mut listed = Vec::new();
    if let Some(limit) = plan.list {
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) =
                nango.list_records::<Value>(&plan.model, cursor.as_deref(), limit)?;
            listed.push(page.iter().map(|r| r["id"].clone()).collect::<Vec<_>>());
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    let mut out = json!({
        "found": found,
        "listed": listed,
        "last_sync_date": nango.last_sync_date(),
        "variant": nango.variant(),
        "track_deletes": nango.track_deletes(),
    });
    if plan.pad > 0 {
        out["pad"] = json!("x".repeat(plan.pad));
    }
    Ok(out)
}

#[sync(webhook = on_webhook)]
fn fetch_data(nango: &Nango) -> Result<(), Error> {
    let plan: Plan = nango.metadata()?;
    apply(nango, &plan).map(|_| ())
}

fn on_webhook(nango: &Nango, payload: Value) -> Result<Option<Value>, Error> {
    let plan: Plan = serde_json::from_value(payload)?;
    apply(nango, &plan).map(Some)
}

fn main() {}
