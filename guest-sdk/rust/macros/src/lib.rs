//! `#[sync]`, `#[action]` and `#[on_event]`: turn a function into the export
//! of a `nango:scripts` world.
//!
//! Each attribute expands to a `wit_bindgen::generate!` of its world with the
//! text of `wit/nango.wit` inlined (read here at compile time, so the WIT stays
//! the one source of the contract) and every import mapped onto
//! `sluice_sdk::bindings`, so the script shares the SDK's types.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::Parser as _;
use syn::punctuated::Punctuated;
use syn::{Ident, ItemFn, Meta, Token, parse_macro_input};

const WIT: &str = include_str!("../../../../wit/nango.wit");

/// The package's `name@version`, for the `with` keys.
fn package() -> String {
    WIT.lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map(|p| p.trim_end_matches(';').trim().to_string())
        .unwrap_or_default()
}

fn with_entry(interface: &str) -> proc_macro2::TokenStream {
    let pkg = package();
    let (name, version) = pkg.split_once('@').unwrap_or((&pkg, ""));
    let key = if version.is_empty() {
        format!("{name}/{interface}")
    } else {
        format!("{name}/{interface}@{version}")
    };
    let module = format_ident!("{}", interface.replace('-', "_"));
    quote! { #key: ::sluice_sdk::bindings::nango::scripts::#module, }
}

fn generate(
    world: &str,
    imports: &[&str],
    guest: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let withs: Vec<_> = imports.iter().map(|i| with_entry(i)).collect();
    let world = format!("nango:scripts/{world}");
    quote! {
        #[doc(hidden)]
        #[allow(clippy::all, unsafe_code)]
        mod __sluice_export {
            ::sluice_sdk::__private::wit_bindgen::generate!({
                inline: #WIT,
                world: #world,
                with: { #(#withs)* },
                runtime_path: "::sluice_sdk::__private::wit_bindgen::rt",
            });
            struct Script;
            #guest
            export!(Script);
        }
    }
}

const BASE_IMPORTS: &[&str] = &["types", "http", "log", "connection"];

fn named_arg(attr: TokenStream, key: &str) -> syn::Result<Option<Ident>> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr)?;
    let mut found = None;
    for meta in metas {
        match meta {
            Meta::NameValue(nv) if nv.path.is_ident(key) => {
                if let syn::Expr::Path(p) = &nv.value
                    && let Some(ident) = p.path.get_ident()
                {
                    found = Some(ident.clone());
                    continue;
                }
                return Err(syn::Error::new_spanned(
                    nv.value,
                    "expected a function name",
                ));
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    format!("unknown argument; expected `{key} = function`"),
                ));
            }
        }
    }
    Ok(found)
}

/// Marks `fn(&Nango) -> Result<(), Error>` as a sync's `fetchData`.
///
/// `#[sync(webhook = handler)]` also exports `onWebhookPayloadReceived`
/// with `fn handler(&Nango, serde_json::Value) -> Result<Option<serde_json::Value>, Error>`.
#[proc_macro_attribute]
pub fn sync(attr: TokenStream, item: TokenStream) -> TokenStream {
    let webhook = match named_arg(attr, "webhook") {
        Ok(w) => w,
        Err(e) => return e.to_compile_error().into(),
    };
    let func = parse_macro_input!(item as ItemFn);
    let name = &func.sig.ident;
    let webhook_body = match webhook {
        Some(handler) => quote! { ::sluice_sdk::__private::run_webhook(payload, super::#handler) },
        None => quote! { ::sluice_sdk::__private::no_webhook() },
    };
    let mut imports = BASE_IMPORTS.to_vec();
    imports.extend(["records", "sync-context"]);
    let export = generate(
        "sync",
        &imports,
        quote! {
            impl Guest for Script {
                fn fetch_data() -> Result<(), ::sluice_sdk::bindings::nango::scripts::types::ScriptError> {
                    ::sluice_sdk::__private::run_script(super::#name)
                }
                fn on_webhook_payload_received(
                    payload: Vec<u8>,
                ) -> Result<Option<Vec<u8>>, ::sluice_sdk::bindings::nango::scripts::types::ScriptError> {
                    #webhook_body
                }
            }
        },
    );
    quote! { #func #export }.into()
}

/// Marks `fn(&Nango, I) -> Result<O, Error>` as an action's `runAction`;
/// `I: DeserializeOwned` (use `Option<T>` when the input is optional),
/// `O: Serialize` (`()` gives no output, as a TypeScript action that
/// returns nothing; `None` or `Value::Null` gives `null`, as one that
/// returns `null`).
#[proc_macro_attribute]
pub fn action(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[action] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let name = &func.sig.ident;
    let export = generate(
        "action",
        BASE_IMPORTS,
        quote! {
            impl Guest for Script {
                fn run_action(
                    input: Option<Vec<u8>>,
                ) -> Result<Option<Vec<u8>>, ::sluice_sdk::bindings::nango::scripts::types::ScriptError> {
                    ::sluice_sdk::__private::run_action(input, super::#name)
                }
            }
        },
    );
    quote! { #func #export }.into()
}

/// Marks `fn(&Nango) -> Result<(), Error>` as an event script
/// (post-connection-creation, pre-connection-deletion).
#[proc_macro_attribute]
pub fn on_event(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[on_event] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let name = &func.sig.ident;
    let export = generate(
        "on-event",
        BASE_IMPORTS,
        quote! {
            impl Guest for Script {
                fn on_event() -> Result<(), ::sluice_sdk::bindings::nango::scripts::types::ScriptError> {
                    ::sluice_sdk::__private::run_script(super::#name)
                }
            }
        },
    );
    quote! { #func #export }.into()
}
