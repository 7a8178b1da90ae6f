//! Host bindings generated from `wit/nango.wit`.
//!
//! Imports come from the `sdk` world (every interface a script may import);
//! each script kind's world reuses them and adds its exports. Imports are
//! `trappable` so a host bug or a broken resource handle ends the execution
//! instead of being handed to the guest as a value; expected failures are
//! the WIT `nango-error` / `http-error` values. The imports that only read
//! execution state, and the locks (an in-memory table), stay synchronous:
//! they are the cheapest calls a guest makes.

use wasmtime::component::{HasSelf, Linker};

mod imports {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sdk",
        imports: {
            "nango:scripts/log": trappable,
            "nango:scripts/intl": trappable,
            "nango:scripts/sync-context": trappable,
            "nango:scripts/connection.info": trappable,
            "nango:scripts/connection.try-acquire-lock": trappable,
            "nango:scripts/connection.release-lock": trappable,
            "nango:scripts/connection.release-all-locks": trappable,
            default: async | trappable,
        },
        with: {
            "nango:scripts/http.paginator": crate::paginate::Pager,
        },
    });
}

pub use imports::nango::scripts::{connection, http, intl, log, records, sync_context, types};

mod sync_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sync",
        exports: { default: async },
        with: { "nango:scripts": super::imports::nango::scripts },
    });
}

mod action_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "action",
        exports: { default: async },
        with: { "nango:scripts": super::imports::nango::scripts },
    });
}

mod on_event_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "on-event",
        exports: { default: async },
        with: { "nango:scripts": super::imports::nango::scripts },
    });
}

mod bundle_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bundle",
        exports: { default: async },
        with: { "nango:scripts": super::imports::nango::scripts },
    });
}

pub use action_world::ActionPre;
pub use bundle_world::BundlePre;
pub use on_event_world::OnEventPre;
pub use sync_world::SyncPre;

/// Adds every `nango:scripts` import to `linker`.
pub fn add_to_linker(linker: &mut Linker<crate::host::HostState>) -> wasmtime::Result<()> {
    imports::Sdk::add_to_linker::<_, HasSelf<crate::host::HostState>>(linker, |s| s)
}
