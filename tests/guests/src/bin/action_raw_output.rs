//! An action built on the bare contract, without the SDK: it returns the
//! bytes its input names as its output, JSON or not (the SDK only ever
//! returns JSON), to test what the host does with them.

mod bindings {
    sluice_sdk::__private::wit_bindgen::generate!({
        path: "../../wit",
        world: "nango:scripts/action",
        runtime_path: "::sluice_sdk::__private::wit_bindgen::rt",
        generate_all,
    });
}

use bindings::nango::scripts::types::ScriptError;

struct Raw;

impl bindings::Guest for Raw {
    fn run_action(input: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, ScriptError> {
        // The input is a JSON string: its text is the output.
        let text: String = input
            .and_then(|i| serde_json::from_slice(&i).ok())
            .unwrap_or_default();
        Ok(Some(text.into_bytes()))
    }
}

bindings::export!(Raw with_types_in bindings);

fn main() {}
