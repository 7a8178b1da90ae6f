//! Misbehaves in the way the input names, to exercise the sandbox's limits.

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_sdk::{Error, Nango, action};

#[derive(Deserialize)]
struct Input {
    mode: String,
}

#[action]
fn run(nango: &Nango, input: Input) -> Result<Value, Error> {
    match input.mode.as_str() {
        "spin" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "hog" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "action-error" => Err(Error::action(
            json!({ "message": "card declined", "code": 402 }),
        )),
        "panic" => panic!("the script gave up"),
        "recurse" => Ok(json!(deeper(0))),
        "huge" => {
            // One allocation the allocator cannot even ask the host for.
            let block = vec![1u8; (1 << 31) - 1];
            Ok(json!(std::hint::black_box(&block).len()))
        }
        "print" => {
            println!("to stdout");
            eprintln!("to stderr");
            nango.log_with(
                sluice_sdk::Level::Warn,
                "with meta",
                Some(&json!({ "k": 1 })),
            );
            Ok(json!("printed"))
        }
        "log-flood" => {
            // A thousand lines, each with ~45 KB of meta that parses to
            // ~3 MB on the host.
            let meta = json!(vec![0u8; 22_000]);
            for i in 0..1_000 {
                nango.log_with(sluice_sdk::Level::Info, &format!("line {i}"), Some(&meta));
            }
            Ok(json!("flooded"))
        }
        "host-spin" => {
            // Hardly an instruction of its own per call: the host copies
            // and checks a megabyte each time.
            let text = "x".repeat(1 << 20);
            loop {
                nango.log_with(sluice_sdk::Level::Debug, &text, None);
            }
        }
        "env-spin" => {
            // An import the host does not charge for, whose answer (the
            // environment's variables, large in the test) takes the host
            // far longer than the guest spends on a call.
            use sluice_sdk::bindings::nango::scripts::connection;
            loop {
                let vars = connection::get_environment_variables()?;
                std::hint::black_box(vars.len());
            }
        }
        "wait" => {
            // Waits inside a host call: the upstream answers slowly.
            nango.get("/slow").send()?;
            Ok(json!("done"))
        }
        other => Err(Error::msg(format!("unknown mode {other}"))),
    }
}

/// Recursion without end: the stack overflows.
fn deeper(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 64]);
    if frame[0] == u64::MAX {
        return 0;
    }
    deeper(n + 1).wrapping_add(frame[1])
}

fn main() {}
