//! Action: create a HubSpot contact. A contact that already exists is an
//! ActionError the caller can act on.

use hubspot_rust::{Contact, HubspotContact};
use serde::Deserialize;
use serde_json::json;
use sluice_sdk::{Error, Nango, action};

#[derive(Deserialize)]
struct Input {
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[action]
fn run(nango: &Nango, input: Input) -> Result<Contact, Error> {
    let body = json!({
        "properties": {
            "email": input.email,
            "firstname": input.first_name,
            "lastname": input.last_name,
        }
    });
    match nango.post("/crm/v3/objects/contacts").json(&body).send() {
        Ok(resp) => Ok(resp.json::<HubspotContact>()?.into()),
        Err(Error::Http(resp)) if resp.status == 409 => Err(Error::action(json!({
            "message": "a contact with this email already exists",
            "email": input.email,
        }))),
        Err(e) => Err(e),
    }
}

fn main() {}
