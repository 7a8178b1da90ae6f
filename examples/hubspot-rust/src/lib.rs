//! Models and mapping shared by this integration's scripts.

use serde::{Deserialize, Serialize};

/// The record this integration syncs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub created_at: String,
}

/// A contact as HubSpot's CRM API returns it.
#[derive(Debug, Deserialize)]
pub struct HubspotContact {
    pub id: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(default)]
    pub properties: HubspotProperties,
}

#[derive(Debug, Default, Deserialize)]
pub struct HubspotProperties {
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub email: Option<String>,
}

impl From<HubspotContact> for Contact {
    fn from(c: HubspotContact) -> Self {
        Contact {
            id: c.id,
            first_name: c.properties.firstname,
            last_name: c.properties.lastname,
            email: c.properties.email,
            created_at: c.created_at,
        }
    }
}
