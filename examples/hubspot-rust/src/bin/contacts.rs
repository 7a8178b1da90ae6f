//! Sync: every HubSpot contact, page by page (cursor pagination from the
//! provider's defaults), saved as `Contact` records.

use hubspot_rust::{Contact, HubspotContact};
use sluice_sdk::{Error, Nango, sync};

#[sync]
fn fetch_data(nango: &Nango) -> Result<(), Error> {
    if let Some(since) = nango.last_sync_date() {
        nango.log(format!("last successful sync started at {since}"));
    }
    let pages = nango
        .get("/crm/v3/objects/contacts")
        .param("properties", "firstname,lastname,email")
        .retries(3)
        .paginate::<HubspotContact>(Some(serde_json::json!({ "limit": 2 })));
    let mut total = 0;
    for page in pages {
        let contacts: Vec<Contact> = page?.into_iter().map(Contact::from).collect();
        total += contacts.len();
        nango.batch_save(&contacts, "Contact")?;
    }
    nango.log(format!("saved {total} contacts"));
    Ok(())
}

fn main() {}
