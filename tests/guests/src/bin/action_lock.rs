//! Takes and releases locks as its input's steps say, and reports what each
//! step answered: `{"acquire": key, "ttl_ms": n}`, `{"release": key}`,
//! `{"release_all": true}`, `{"nested": input}` (this action again, through
//! `triggerAction`, on the same connection), `{"wait_open": endpoint}` (asks
//! the upstream until it answers `{"open": true}`).

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_sdk::{Error, Nango, action};

#[derive(Deserialize)]
#[serde(untagged)]
enum Step {
    Acquire { acquire: String, ttl_ms: u64 },
    Release { release: String },
    ReleaseAll { release_all: bool },
    Nested { nested: Value },
    WaitOpen { wait_open: String },
}

#[derive(Deserialize)]
struct Input {
    steps: Vec<Step>,
}

#[action]
fn run(nango: &Nango, input: Input) -> Result<Value, Error> {
    let mut answers = Vec::new();
    for step in input.steps {
        let answer = match step {
            Step::Acquire { acquire, ttl_ms } => {
                let ttl = std::time::Duration::from_millis(ttl_ms);
                match nango.try_acquire_lock(&acquire, ttl) {
                    Ok(taken) => json!(taken),
                    Err(Error::Sdk { code, message, .. }) => {
                        json!({"code": code, "message": message})
                    }
                    Err(e) => return Err(e),
                }
            }
            Step::Release { release } => json!(nango.release_lock(&release)?),
            Step::ReleaseAll { .. } => {
                nango.release_all_locks();
                Value::Null
            }
            Step::Nested { nested } => {
                let info = nango.info();
                nango.trigger_action::<Value>(
                    &info.provider_config_key,
                    &info.connection_id,
                    &info.script_name,
                    &nested,
                )?
            }
            Step::WaitOpen { wait_open } => {
                let mut asked = 0u32;
                loop {
                    asked += 1;
                    let resp = nango.get(wait_open.clone()).send()?;
                    if resp.json::<Value>()?["open"] == true {
                        break json!(asked);
                    }
                }
            }
        };
        answers.push(answer);
    }
    Ok(Value::Array(answers))
}

fn main() {}
